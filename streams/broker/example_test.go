package broker_test

import (
	"context"
	"fmt"
	"log"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/entrowatch/entrowatch/streams/broker"
)

// The embedded broker speaks the Kafka protocol: any Kafka client sees its
// topics. (streams/kafka's ExampleProducer_ProduceBatch produces a trace.v1
// batch to it and reads it back.)
func ExampleStart() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := broker.DefaultConfig() // 127.0.0.1:0, in memory
	cfg.Topics, cfg.Partitions = []string{"traces"}, 3
	b, err := broker.Start(cfg, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close(ctx)

	conn, err := kafkago.DialContext(ctx, "tcp", b.Addr())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions("traces")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("partitions of traces:", len(parts))
	// Output:
	// partitions of traces: 3
}
