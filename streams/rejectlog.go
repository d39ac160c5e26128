package streams

import (
	"log/slog"
	"sync"
	"time"
)

// RejectLogLimit records of one reason are logged per RejectLogWindow by a
// RejectLog; the others are only counted.
const (
	RejectLogLimit  = 10
	RejectLogWindow = time.Minute
)

// RejectLog logs rejected input at WARN (the stream's dead letters, the
// bodies HTTP ingest refuses), at most RejectLogLimit per reason per
// RejectLogWindow, so that a flood of bad input cannot flood the log; the
// first record of a reason in a new window says how many of the last one
// went unlogged. Safe for concurrent use.
type RejectLog struct {
	log  *slog.Logger
	msg  string // the message of a logged record
	over string // the message of the count of the unlogged ones
	mu   sync.Mutex
	by   map[string]*rejectWindow
}

type rejectWindow struct {
	start           time.Time
	logged, skipped int
}

// NewRejectLog logs records with message msg and the counts of those left
// out with message over (which should name the metric that counts them all).
func NewRejectLog(log *slog.Logger, msg, over string) *RejectLog {
	return &RejectLog{log: log, msg: msg, over: over, by: map[string]*rejectWindow{}}
}

// Note logs one record of reason, with args as slog key-value pairs, unless
// its reason used up its window.
func (l *RejectLog) Note(now time.Time, reason string, args ...any) {
	l.mu.Lock()
	w := l.by[reason]
	if w == nil {
		w = &rejectWindow{start: now}
		l.by[reason] = w
	}
	skipped := 0
	if now.Sub(w.start) >= RejectLogWindow {
		skipped = w.skipped
		*w = rejectWindow{start: now}
	}
	logIt := w.logged < RejectLogLimit
	if logIt {
		w.logged++
	} else {
		w.skipped++
	}
	l.mu.Unlock()
	if skipped > 0 {
		l.log.Warn(l.over, "reason", reason, "count", skipped, "limit", RejectLogLimit)
	}
	if logIt {
		l.log.Warn(l.msg, append([]any{"reason", reason}, args...)...)
	}
}
