package clustertag

import (
	"context"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// scoredBatch builds a scored.v1 batch whose prompt and domain columns hold
// the given values (nil = null); every other column holds empty values.
func scoredBatch(t *testing.T, mem memory.Allocator, prompts, domains []*string) arrow.RecordBatch {
	t.Helper()
	b := array.NewRecordBuilder(mem, schemas.Scored)
	defer b.Release()
	pi := schemas.MustIndex(schemas.Scored, schemas.ColPrompt)
	di := schemas.MustIndex(schemas.Scored, schemas.ColDomain)
	for r := range prompts {
		for i, f := range b.Fields() {
			var v *string
			switch i {
			case pi:
				v = prompts[r]
			case di:
				v = domains[r]
			default:
				f.AppendEmptyValue()
				continue
			}
			sb := f.(*array.StringBuilder)
			if v == nil {
				sb.AppendNull()
			} else {
				sb.Append(*v)
			}
		}
	}
	return b.NewRecordBatch()
}

func sp(s string) *string { return &s }

// lawPrompt is on the first synthetic topic; all but one of its words
// ("heard") are in that topic's vocabulary, so it is within the threshold.
const lawPrompt = "The judge and the jury heard the plaintiff's appeal of the verdict: was the contract evidence of negligence, and the defendant's testimony a tort?"

func TestOperator(t *testing.T) {
	prompts, _ := synthPrompts(30, 8)
	cfg := quietConfig()
	cfg.K = 3
	cfg.ThresholdQuantile = 1
	m, err := Fit(context.Background(), prompts, cfg, nil)
	require.NoError(t, err)
	require.NoError(t, m.Seal())
	tg := m.NewTagger()
	law, _ := tg.Tag(lawPrompt)
	require.NotEqual(t, Unclustered, law)
	lawLabel := m.Clusters[law].Label

	in := []*string{sp(lawPrompt), nil, sp(""), sp("zyx qwv"), sp(lawPrompt)}
	dom := []*string{nil, nil, sp("billing"), nil, sp("legal")}
	for _, tc := range []struct {
		from      string
		domains   []*string
		domainSet int64
	}{
		{DomainFromCallerElseCluster, []*string{sp(lawLabel), sp(UnclusteredLabel), sp("billing"), sp(UnclusteredLabel), sp("legal")}, 3},
		{DomainFromCaller, dom, 0},
		{DomainFromCluster, []*string{sp(lawLabel), sp(UnclusteredLabel), sp(UnclusteredLabel), sp(UnclusteredLabel), sp(lawLabel)}, 5},
	} {
		t.Run(tc.from, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			op, err := New(Config{Model: m, DomainFrom: tc.from}, mem, nil)
			require.NoError(t, err)
			rec := scoredBatch(t, mem, in, dom)
			defer rec.Release()
			out, err := op.Process(context.Background(), rec)
			require.NoError(t, err)
			require.Len(t, out, 1)
			got := out[0]
			defer got.Release()
			require.True(t, got.Schema().Equal(schemas.Scored))
			require.EqualValues(t, len(in), got.NumRows())

			ids := got.Column(schemas.MustIndex(schemas.Scored, schemas.ColClusterID)).(*array.Int32)
			labels := got.Column(schemas.MustIndex(schemas.Scored, schemas.ColClusterLabel)).(*array.String)
			dist := got.Column(schemas.MustIndex(schemas.Scored, schemas.ColClusterDistance)).(*array.Float32)
			domains := got.Column(schemas.MustIndex(schemas.Scored, schemas.ColDomain)).(*array.String)

			wantIDs := []int32{int32(m.Clusters[law].ID), -1, -1, -1, int32(m.Clusters[law].ID)}
			require.Equal(t, wantIDs, ids.Int32Values())
			require.Equal(t, []string{lawLabel, UnclusteredLabel, UnclusteredLabel, UnclusteredLabel, lawLabel},
				[]string{labels.Value(0), labels.Value(1), labels.Value(2), labels.Value(3), labels.Value(4)})
			require.True(t, dist.IsNull(1) && dist.IsNull(2), "no prompt: distance null")
			require.True(t, dist.IsValid(0) && dist.Value(0) < 0.9)
			require.Equal(t, float32(1), dist.Value(3), "no known term: distance 1")
			for i, w := range tc.domains {
				if w == nil {
					require.True(t, domains.IsNull(i), "row %d", i)
				} else {
					require.Equal(t, *w, domains.Value(i), "row %d", i)
				}
			}
			// Unchanged columns are shared, not copied.
			pi := schemas.MustIndex(schemas.Scored, schemas.ColPrompt)
			require.Same(t, rec.Column(pi).Data(), got.Column(pi).Data())
			if tc.from == DomainFromCaller {
				di := schemas.MustIndex(schemas.Scored, schemas.ColDomain)
				require.Same(t, rec.Column(di).Data(), got.Column(di).Data())
			}
			require.Equal(t, Stats{Tagged: 2, Unclustered: 1, NoPrompt: 2, DomainSet: tc.domainSet}, op.Stats())
		})
	}
}

func TestOperatorErrors(t *testing.T) {
	_, err := New(Config{}, memory.DefaultAllocator, nil)
	require.ErrorContains(t, err, "no cluster artifact")
	_, err = New(Config{Path: "/nonexistent/clusters.json"}, memory.DefaultAllocator, nil)
	require.ErrorContains(t, err, "cluster fit")
	prompts, _ := synthPrompts(10, 9)
	m, err := Fit(context.Background(), prompts, quietConfig(), nil)
	require.NoError(t, err)
	_, err = New(Config{Model: m, DomainFrom: "guess"}, memory.DefaultAllocator, nil)
	require.ErrorContains(t, err, "domain_from")

	// A batch without the cluster columns (trace.v1) is a wiring error.
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	op, err := New(Config{Model: m}, mem, nil)
	require.NoError(t, err)
	b := array.NewRecordBuilder(mem, schemas.Trace)
	defer b.Release()
	rec := b.NewRecordBatch()
	defer rec.Release()
	_, err = op.Process(context.Background(), rec)
	require.ErrorContains(t, err, "cluster_id")
}

// TestOperatorBlankDomain: a caller's domain of "" or white space is no
// domain. caller_else_cluster filled only null, so clients sending "" put all
// their traffic in one slice named "".
func TestOperatorBlankDomain(t *testing.T) {
	prompts, _ := synthPrompts(30, 8)
	cfg := quietConfig()
	cfg.K = 3
	m, err := Fit(context.Background(), prompts, cfg, nil)
	require.NoError(t, err)
	c, _ := m.NewTagger().Tag(lawPrompt)
	require.NotEqual(t, Unclustered, c)
	law := m.Clusters[c].Label

	in := []*string{sp(lawPrompt), sp(lawPrompt), sp(lawPrompt), sp(lawPrompt), sp(lawPrompt)}
	dom := []*string{sp(""), sp("  "), sp("\t\n"), sp("legal"), nil}
	for _, tc := range []struct {
		from      string
		want      []*string
		domainSet int64
	}{
		{DomainFromCallerElseCluster, []*string{sp(law), sp(law), sp(law), sp("legal"), sp(law)}, 4},
		{DomainFromCaller, []*string{nil, nil, nil, sp("legal"), nil}, 0},
		{DomainFromCluster, []*string{sp(law), sp(law), sp(law), sp(law), sp(law)}, 5},
	} {
		t.Run(tc.from, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			op, err := New(Config{Model: m, DomainFrom: tc.from}, mem, nil)
			require.NoError(t, err)
			rec := scoredBatch(t, mem, in, dom)
			defer rec.Release()
			out, err := op.Process(context.Background(), rec)
			require.NoError(t, err)
			got := out[0]
			defer got.Release()
			domains := got.Column(schemas.MustIndex(schemas.Scored, schemas.ColDomain)).(*array.String)
			for i, w := range tc.want {
				if w == nil {
					require.True(t, domains.IsNull(i), "row %d: %q, want null", i, domains.Value(i))
				} else {
					require.True(t, domains.IsValid(i), "row %d", i)
					require.Equal(t, *w, domains.Value(i), "row %d", i)
				}
			}
			require.Equal(t, tc.domainSet, op.Stats().DomainSet)
		})
	}
}

// TestOperatorNilArgs: a nil allocator means memory.DefaultAllocator
// (README, "Use it from Go"; the first Process panicked inside arrow), and a
// nil batch is an error, not a panic.
func TestOperatorNilArgs(t *testing.T) {
	prompts, _ := synthPrompts(30, 8)
	cfg := quietConfig()
	cfg.K = 3
	m, err := Fit(context.Background(), prompts, cfg, nil)
	require.NoError(t, err)
	op, err := New(Config{Model: m}, nil, nil)
	require.NoError(t, err)
	rec := scoredBatch(t, memory.DefaultAllocator, []*string{sp(lawPrompt)}, []*string{nil})
	defer rec.Release()
	out, err := op.Process(context.Background(), rec)
	require.NoError(t, err)
	require.Len(t, out, 1)
	out[0].Release()
	_, err = op.Process(context.Background(), nil)
	require.ErrorContains(t, err, "nil batch")
}
