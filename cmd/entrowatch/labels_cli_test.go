package main

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// The labels subcommands take exactly one of a file and a topic, and a topic
// needs brokers; both are checked before anything connects.
func TestLabelsFileOrTopic(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		usage string // expected on stderr with errUsage
		err   string // expected error otherwise
	}{
		{args: []string{"requests"}, usage: "give exactly one of --out FILE or --topic T"},
		{args: []string{"requests", "--out", "x.csv", "--topic", "t"}, usage: "give exactly one of --out FILE or --topic T"},
		{args: []string{"requests", "--topic", "t"}, err: "--topic t needs --brokers"},
		{args: []string{"import"}, usage: "give exactly one of --in FILE or --topic T"},
		{args: []string{"import", "--in", "x.csv", "--topic", "t"}, usage: "give exactly one of --in FILE or --topic T"},
		{args: []string{"import", "--topic", "t"}, err: "--topic t needs --brokers"},
	} {
		var stdout, stderr bytes.Buffer
		err := runLabels(context.Background(), tc.args, &stdout, &stderr)
		require.Error(t, err, tc.args)
		if tc.usage != "" {
			require.True(t, errors.Is(err, errUsage), "%v: %v", tc.args, err)
			require.Contains(t, stderr.String(), tc.usage, tc.args)
		} else {
			require.Contains(t, err.Error(), tc.err, tc.args)
		}
	}
}
