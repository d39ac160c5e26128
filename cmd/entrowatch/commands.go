package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strings"

	"github.com/entrowatch/entrowatch/operators/clustertag"
	"github.com/entrowatch/entrowatch/operators/estimate"
)

// command is one subcommand of the binary.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands lists the subcommands; each lives in the file of its name.
var commands = map[string]command{
	"score":       {"score responses offline: JSONL or Arrow in, CSV or Arrow out", runScore},
	"train":       {"train and calibrate an estimator of P(correct)", runTrain},
	"eval":        {"evaluate estimators with the leave-domains-out protocol", runEval},
	"cluster":     {"fit or report topic clusters of prompts (cluster fit|report)", runCluster},
	"run":         {"run the stream processor (embedded broker when unconfigured)", runRun},
	"broker":      {"run the embedded Kafka-protocol broker alone (several replicas on one machine)", runBroker},
	"ingest":      {"convert responses to trace.v1 batches and produce them to Kafka", runIngest},
	"migrate":     {"create or upgrade the ClickHouse schema", runMigrate},
	"alarms":      {"dispatch drift alarms from ClickHouse to Kafka and webhooks", runAlarms},
	"labels":      {"labeling requests, label import, labelled rows for training (labels requests|import|export)", runLabels},
	"deadletters": {"list (and requeue) what the stream dead-lettered, with the reasons", runDeadletters},
	"bench":       {"measure throughput (bench operators|pipeline)", runBench},
	"demo":        {"the whole loop on bundled real traces", runDemo},
}

// errUsage marks errors whose message is the usage already printed.
var errUsage = errors.New("usage")

// flagError is a flag value that cannot work (--k 1, --family gbm): its
// message is printed with a pointer to -h, and the exit status is 2, as for
// any usage error.
type flagError struct{ error }

func (e flagError) Is(target error) bool { return target == errUsage }
func (e flagError) Unwrap() error        { return e.error }

// badFlag returns a flagError with the formatted message.
func badFlag(format string, a ...any) error { return flagError{fmt.Errorf(format, a...)} }

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "help":
		if len(args) == 1 {
			usage(stdout)
			return 0
		}
		// "entrowatch help score" is "entrowatch score -h"; "help cluster fit" too.
		args = append(append([]string{}, args[1:]...), "-h")
	case "version", "--version", "-version":
		if len(args) > 1 {
			fmt.Fprintf(stderr, "entrowatch version takes no arguments, got: %s\n", strings.Join(args[1:], " "))
			return 2
		}
		// What an upgrade needs to know besides the commit: the schema
		// version it migrates to, the artifact formats it reads, Go.
		fmt.Fprintf(stdout, "entrowatch %s\nschema: ClickHouse migrations 001-%03d\nartifacts: %s, %s\n%s\n",
			version, lastMigration(), estimate.Format, clustertag.Format, runtime.Version())
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "entrowatch: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	errw := stderr
	if wantsHelp(args[1:]) {
		errw = stdout // asked-for help goes where a pager or grep can read it
	}
	if err := cmd.run(ctx, args[1:], stdout, errw); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if errors.Is(err, errUsage) {
			if fe := (flagError{}); errors.As(err, &fe) {
				name := args[0]
				if withSubcommands[name] && len(args) > 1 && !strings.HasPrefix(args[1], "-") {
					name += " " + args[1] // the flags are the subcommand's
				}
				fmt.Fprintf(stderr, "entrowatch %s: %v\nRun 'entrowatch %s -h' for its flags.\n", name, err, name)
			}
			return 2
		}
		// Library errors often begin with the command's own name
		// ("alarms: webhook ..."): say it once.
		fmt.Fprintf(stderr, "entrowatch %s: %s\n", args[0], strings.TrimPrefix(err.Error(), args[0]+": "))
		return 1
	}
	return 0
}

// withSubcommands are the commands whose first argument names a
// subcommand with flags of its own.
var withSubcommands = map[string]bool{"bench": true, "cluster": true, "labels": true}

// wantsHelp reports whether args ask for help (-h, -help or --help before a
// "--").
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func usage(w io.Writer) {
	fmt.Fprintln(w, "entrowatch: label-free accuracy estimation for deployed LLMs, per traffic slice.")
	fmt.Fprintln(w, "\nUsage: entrowatch COMMAND [flags]   (entrowatch COMMAND -h for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-11s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "  %-11s %s\n", "version", "print the version")
	fmt.Fprintln(w, "\nA first look, on the bundled real traces: entrowatch demo")
	fmt.Fprintln(w, "Offline: entrowatch score --in responses.jsonl.gz --out profiles.csv")
	fmt.Fprintln(w, "Docs: README.md and docs/ in the source tree.")
}

// newFlags returns a FlagSet that prints its usage with a one-line synopsis.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("entrowatch "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: entrowatch %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and rejects positional leftovers, which are almost
// always a mistyped flag. Unless help was asked for, a usage error prints its
// one-line reason and a pointer to -h rather than the whole flag list, so the
// reason stays on screen.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if !wantsHelp(args) {
		fs.Usage = func() {
			fmt.Fprintf(fs.Output(), "Run '%s -h' for its flags.\n", fs.Name())
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		hint := ""
		if in := fs.Lookup("in"); in != nil && in.Value.String() == "" && !strings.HasPrefix(fs.Arg(0), "-") {
			// "score responses.jsonl --out x.csv": files are named by flags,
			// and the flag package stops at the first argument that is not one.
			hint = fmt.Sprintf(" (files are named by flags: --in %s; flags after an argument are not read)", fs.Arg(0))
		}
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s%s\n", strings.Join(fs.Args(), " "), hint)
		fs.Usage()
		return errUsage
	}
	return nil
}
