package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Positional files get a hint naming the flag; version takes no flags; the
// top-level help names every labels subcommand.
func TestCLIArgumentHints(t *testing.T) {
	_, stderr, code := runCLI(t, "score", "responses.jsonl", "--out", "x.csv")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "unexpected arguments: responses.jsonl --out x.csv (files are named by flags: --in responses.jsonl")
	_, stderr, code = runCLI(t, "score", "--in", "a.jsonl", "--out", "x.csv", "extra")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "unexpected arguments: extra\n", "no --in hint when --in was given")

	stdout, stderr, code := runCLI(t, "version", "--bogus")
	require.Equal(t, 2, code)
	require.Empty(t, stdout)
	require.Contains(t, stderr, "takes no arguments")
	stdout, _, code = runCLI(t, "version")
	require.Equal(t, 0, code)
	require.Contains(t, stdout, "entrowatch ")

	stdout, _, code = runCLI(t, "--help")
	require.Equal(t, 0, code)
	require.Contains(t, stdout, "labels requests|import|export")
}

// An error whose text begins with the command's name is printed with the
// name once: "entrowatch alarms: webhook ...", not "entrowatch alarms:
// alarms: webhook ...".
func TestCLIErrorNamesCommandOnce(t *testing.T) {
	_, stderr, code := runCLI(t, "alarms", "--clickhouse", "clickhouse://127.0.0.1:1", "--webhook", "ftp://x", "--once")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "entrowatch alarms: webhook ftp://x: want an http:// or https:// URL")
	require.NotContains(t, stderr, "alarms: alarms:")
}
