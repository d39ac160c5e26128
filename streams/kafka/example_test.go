package kafka_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/streams/broker"
	"github.com/entrowatch/entrowatch/streams/ipc"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// One trace.v1 batch produced to the embedded broker and read back.
func ExampleProducer_ProduceBatch() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mem := memory.DefaultAllocator

	bcfg := broker.DefaultConfig() // 127.0.0.1:0, in memory
	bcfg.Topics, bcfg.Partitions = []string{"traces"}, 1
	b, err := broker.Start(bcfg, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close(ctx)

	conn := kafka.DefaultConfig()
	conn.Brokers = []string{b.Addr()}
	p, err := kafka.NewProducer(conn, kafka.DefaultProducerConfig(), nil) // topic "traces"
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	rec := profile.Synthetic(mem, profile.SynthConfig{Traces: 5, Steps: 10, K: 20, Seed: 1, Model: "m"})
	n, err := p.ProduceBatch(ctx, rec, nil) // acknowledged by the broker when it returns
	rec.Release()                           // ProduceBatch keeps no reference
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("messages:", n)

	rows := int64(0)
	err = kafka.ReadTopic(ctx, conn, "traces", false, func(m kafka.Message) error {
		got, err := ipc.Decode(m.Value, mem)
		if err != nil {
			return err
		}
		defer got.Release()
		rows += got.NumRows()
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("rows read back:", rows)
	// Output:
	// messages: 1
	// rows read back: 5
}
