package csvin

import (
	"strings"
	"testing"
)

// TestNewReader: a byte-order mark before a quoted header was a parse
// error ("bare \" in non-quoted-field"), and before an unquoted one part
// of the first name.
func TestNewReader(t *testing.T) {
	for _, in := range []string{
		"\ufeff\"model\",\"domain\"\nm,d\n",
		"\ufeffmodel,domain\nm,d\n",
		"model,domain\nm,d\n",
		"\"model\",domain\nm,d\n",
	} {
		recs, err := NewReader(strings.NewReader(in)).ReadAll()
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if len(recs) != 2 || recs[0][0] != "model" || recs[0][1] != "domain" || recs[1][0] != "m" {
			t.Errorf("%q: got %q", in, recs)
		}
	}
	// Only a leading mark is dropped; a short input is read as it is.
	recs, err := NewReader(strings.NewReader("a")).ReadAll()
	if err != nil || len(recs) != 1 || recs[0][0] != "a" {
		t.Errorf("short input: %q, %v", recs, err)
	}
	recs, err = NewReader(strings.NewReader("a,\ufeffb\n")).ReadAll()
	if err != nil || recs[0][1] != "\ufeffb" {
		t.Errorf("inner mark: %q, %v", recs, err)
	}
}
