package schemas

import (
	"bytes"
	"encoding/json"
)

// PromptText reads a response's prompt field the one way every reader of
// the project does (ingest, score, cluster fit): a string as is, chat
// messages ([{"role": .., "content": ".."}]) as their contents joined by
// newlines, anything else as compact JSON text. ok is false when the field
// is absent or null.
func PromptText(raw json.RawMessage) (text string, ok bool, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", false, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true, nil
	}
	var msgs []struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &msgs) == nil {
		var b bytes.Buffer
		for i, m := range msgs {
			if i > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(m.Content)
		}
		return b.String(), true, nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return "", false, err
	}
	return b.String(), true, nil
}
