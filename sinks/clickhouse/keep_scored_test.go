package clickhouse

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// A copy of a scored trace that cannot be scored (sent again with a broken
// logprob, or replayed after the estimator lost the model) does not replace
// the stored estimate: the table keeps the last row of a key, and the
// accuracy views read status ok only, so before, the trace dropped out of
// scored_ok and the views (found by an operator audit). A rejected row of a
// trace not stored scored is written, and a scored copy still replaces a
// rejected or scored row.
func TestSinkKeepsScoredOverRejectedCopy(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	s, err := NewSink(ctx, cfg, nil)
	require.NoError(t, err)
	defer s.Close(ctx)
	put := func(rows ...row) {
		t.Helper()
		rec := batch(t, mem, rows)
		defer rec.Release()
		require.NoError(t, s.Write(ctx, rec))
	}
	state := func(id string) string {
		t.Helper()
		var status string
		var p *float64
		var n uint64
		require.NoError(t, conn.QueryRow(ctx, "SELECT any(status), any(p_correct), count() FROM "+cfg.Database+".scored FINAL WHERE trace_id = ?", id).Scan(&status, &p, &n))
		if p == nil {
			return fmt.Sprintf("%s p=null n=%d", status, n)
		}
		return fmt.Sprintf("%s p=%.2f n=%d", status, *p, n)
	}
	okRow := func(id string, ts time.Time, p float64) row {
		return row{id: id, ts: ts, domain: "d", p: p, correct: -1, clusterID: -2}
	}
	bad := func(id string, ts time.Time, status string) row {
		return row{id: id, ts: ts, domain: "d", p: -1, correct: -1, clusterID: -2, status: status}
	}

	put(okRow("a", t0, 0.8), okRow("b", t0.Add(time.Minute), 0.6), okRow("c", t0.Add(2*time.Minute), 0.4))
	// Copies that cannot be scored, in another write: a, b have their ok
	// rows in the table; n is new; c's copy is in a later hour, another key.
	put(bad("a", t0, schemas.ReasonPositiveLogprob), bad("b", t0.Add(time.Minute), schemas.ReasonNoLogprobs),
		bad("n", t0, schemas.ReasonNoLogprobs), bad("c", t0.Add(2*time.Hour), schemas.ReasonUnknownModel))
	require.Equal(t, int64(2), s.KeptScored())
	require.Equal(t, "ok p=0.80 n=1", state("a"))
	require.Equal(t, "ok p=0.60 n=1", state("b"))
	require.Equal(t, "no_logprobs p=null n=1", state("n"), "a rejected row of a trace not stored scored is written")
	require.Contains(t, state("c"), " n=2", "another hour is another key: both rows stay")

	// In one write: the scored row of d and a rejected copy after it.
	put(okRow("d", t0, 0.3), bad("d", t0, schemas.ReasonNaNLogprob), bad("e", t0, schemas.ReasonEmpty))
	require.Equal(t, int64(3), s.KeptScored())
	require.Equal(t, "ok p=0.30 n=1", state("d"))
	require.Equal(t, "empty p=null n=1", state("e"))

	// The reverse still holds: a scored copy replaces a rejected row, and a
	// newer estimate replaces the older one.
	put(okRow("n", t0, 0.7), okRow("a", t0, 0.9))
	require.Equal(t, "ok p=0.70 n=1", state("n"))
	require.Equal(t, "ok p=0.90 n=1", state("a"))

	var okRows uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+".scored_ok WHERE trace_id IN ('a', 'b', 'c', 'd', 'n')").Scan(&okRows))
	require.Equal(t, uint64(5), okRows, "every scored trace stays in scored_ok")
}
