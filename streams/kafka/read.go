package kafka

import (
	"context"
	"fmt"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// ReadTopic reads every partition of topic from its first retained offset,
// without a consumer group (nothing is committed, no other reader is
// disturbed), and calls fn for each message, one at a time. Without follow it
// stops at the end each partition had when ReadTopic started; with follow it
// waits for more until ctx is done. An error from fn stops the reading.
func ReadTopic(ctx context.Context, conn Config, topic string, follow bool, fn func(Message) error) error {
	if err := CheckTopic(ctx, conn, topic); err != nil {
		return err
	}
	c, done, err := conn.client()
	if err != nil {
		return err
	}
	defer done()
	meta, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return fmt.Errorf("reaching Kafka at %v: %w", conn.Brokers, err)
	}
	var parts []int
	for _, t := range meta.Topics {
		if t.Name == topic {
			for _, p := range t.Partitions {
				parts = append(parts, p.ID)
			}
		}
	}
	req := &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{}}
	for _, p := range parts {
		req.Topics[topic] = append(req.Topics[topic], kafkago.FirstOffsetOf(p), kafkago.LastOffsetOf(p))
	}
	offs, err := c.ListOffsets(ctx, req)
	if err != nil {
		return fmt.Errorf("topic %s: listing offsets: %w", topic, err)
	}
	type span struct{ first, end int64 }
	spans := map[int]span{}
	for _, po := range offs.Topics[topic] {
		if po.Error != nil {
			return fmt.Errorf("topic %s partition %d: %w", topic, po.Partition, po.Error)
		}
		spans[po.Partition] = span{po.FirstOffset, po.LastOffset}
	}
	d, err := conn.dialer()
	if err != nil {
		return err
	}
	// One reader per partition; fn is called under mu, one message at a time.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
		stopped  bool // under mu: no more calls to fn
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	for _, p := range parts {
		sp := spans[p]
		if !follow && sp.end <= sp.first {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: conn.Brokers, Topic: topic, Partition: p, Dialer: d, MaxBytes: 10 << 20, MaxWait: 250 * time.Millisecond})
			defer r.Close()
			if err := r.SetOffset(sp.first); err != nil {
				fail(err)
				return
			}
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					if ctx.Err() == nil {
						fail(fmt.Errorf("topic %s partition %d: %w", topic, p, err))
					}
					return
				}
				mu.Lock()
				if stopped { // another partition's fn failed or said stop: call fn no more
					mu.Unlock()
					return
				}
				if err = fn(m); err != nil {
					stopped = true
				}
				mu.Unlock()
				if err != nil {
					fail(err)
					return
				}
				if !follow && m.Offset+1 >= sp.end {
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}
