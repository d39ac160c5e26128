package kafka

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ipc"
)

// HeaderSchema is the header naming a message's schema, e.g. "trace.v1".
const HeaderSchema = schemas.MetaKey

// Messages encodes rec as Arrow IPC messages of at most maxBytes each (rows
// are split across messages as needed), each with the schema header and key.
// The values are copies: rec is not released and not referenced afterwards.
func Messages(rec arrow.RecordBatch, key []byte, maxBytes int) ([]Message, error) {
	parts, err := ipc.Encode(rec, maxBytes)
	if err != nil {
		return nil, err
	}
	tag := schemas.NameOf(rec.Schema())
	msgs := make([]Message, len(parts))
	for i, b := range parts {
		msgs[i] = Message{Key: key, Value: b, Headers: []Header{{Key: HeaderSchema, Value: []byte(tag)}}}
	}
	return msgs, nil
}

// ProduceBatch encodes rec into messages under the producer's message size
// limit and produces them; it returns the number of messages. It does not
// release rec and keeps no reference to it once it returns (the messages hold
// encoded copies): the caller still owns rec and releases it.
func (p *Producer) ProduceBatch(ctx context.Context, rec arrow.RecordBatch, key []byte) (int, error) {
	msgs, err := Messages(rec, key, p.cfg.MaxMessageBytes)
	if err != nil {
		return 0, fmt.Errorf("encoding %d rows for %s: %w", rec.NumRows(), p.cfg.Topic, err)
	}
	return len(msgs), p.Produce(ctx, msgs...)
}
