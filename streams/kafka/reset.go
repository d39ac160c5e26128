package kafka

import (
	"context"
	"fmt"

	kafkago "github.com/segmentio/kafka-go"
)

// Reset is a partition whose committed offset ResetPastEnd moved.
type Reset struct {
	Partition int
	From      int64 // the committed offset, past the partition's end
	End       int64 // the partition's end (high watermark)
	To        int64 // the log start, where the group now resumes
}

// ResetPastEnd moves the committed offsets of group on topic that lie past
// their partition's end back to its log start. Such an offset is left
// behind when a broker loses a partition's log (the embedded broker after a
// crash once retention had emptied the partition; a topic deleted and
// created again): messages produced since get offsets below it and would
// never be read. Only a group without members takes such a commit, so it is
// for the start of a process, before its consumer joins; with members it
// returns the partitions and an error. Nothing is committed for the others.
func ResetPastEnd(ctx context.Context, conn Config, topic, group string) ([]Reset, error) {
	c, done, err := conn.client()
	if err != nil {
		return nil, err
	}
	defer done()
	md, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("reaching Kafka at %v: %w", conn.Brokers, err)
	}
	var parts []int
	for _, t := range md.Topics {
		if t.Name == topic && t.Error == nil {
			for _, p := range t.Partitions {
				parts = append(parts, p.ID)
			}
		}
	}
	if len(parts) == 0 {
		return nil, nil
	}
	of, err := c.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err == nil && of.Error != nil {
		err = of.Error
	}
	if err != nil {
		return nil, fmt.Errorf("reading the committed offsets of group %s: %w", group, err)
	}
	committed := map[int]int64{}
	for _, p := range of.Topics[topic] {
		if p.Error == nil && p.CommittedOffset >= 0 {
			committed[p.Partition] = p.CommittedOffset
		}
	}
	if len(committed) == 0 {
		return nil, nil
	}
	reqs := make([]kafkago.OffsetRequest, 0, 2*len(parts))
	for _, p := range parts {
		reqs = append(reqs, kafkago.FirstOffsetOf(p), kafkago.LastOffsetOf(p))
	}
	lo, err := c.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("listing the offsets of %s: %w", topic, err)
	}
	var resets []Reset
	var commits []kafkago.OffsetCommit
	for _, po := range lo.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("listing the offsets of %s partition %d: %w", topic, po.Partition, po.Error)
		}
		if off, ok := committed[po.Partition]; ok && off > po.LastOffset {
			resets = append(resets, Reset{Partition: po.Partition, From: off, End: po.LastOffset, To: po.FirstOffset})
			commits = append(commits, kafkago.OffsetCommit{Partition: po.Partition, Offset: po.FirstOffset})
		}
	}
	if len(commits) == 0 {
		return nil, nil
	}
	res, err := c.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{GroupID: group, GenerationID: -1, Topics: map[string][]kafkago.OffsetCommit{topic: commits}})
	if err != nil {
		return resets, fmt.Errorf("committing the log start for group %s: %w", group, err)
	}
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return resets, fmt.Errorf("committing the log start of %s partition %d for group %s (a group with members refuses it): %w", topic, p.Partition, group, p.Error)
		}
	}
	return resets, nil
}
