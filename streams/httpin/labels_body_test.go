package httpin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/sinks/clickhouse"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// labelsOn reads n labels from a labels topic, with the message each came in.
func labelsOn(t *testing.T, topic string, n int) (labels []clickhouse.Label, msg []int) {
	t.Helper()
	rd := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{testBroker.Addr()}, Topic: topic, MaxWait: 50 * time.Millisecond})
	defer rd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; len(labels) < n; i++ {
		m, err := rd.ReadMessage(ctx)
		require.NoError(t, err)
		got, err := clickhouse.DecodeLabels(m.Value, "import", memory.NewGoAllocator())
		require.NoError(t, err)
		for _, l := range got.Labels {
			labels = append(labels, l)
			msg = append(msg, i)
		}
	}
	return labels, msg
}

// F3a: a body of more than labelsPerMessage labels is cut into messages;
// all its labels share one receipt time and the consumer numbers each
// message's labels from 0, so a trace labelled at position 2 and again at
// 2,001 kept its first label. The body's labels are one per trace (its
// last) before the cut now.
func TestLabelsBodyLastWins(t *testing.T) {
	url, _ := server(t, "http-labels-last", nil)
	lurl := strings.TrimSuffix(url, "/v1/responses") + "/v1/labels"
	ls := make([]map[string]any, labelsPerMessage+1)
	for i := range ls {
		ls[i] = map[string]any{"trace_id": fmt.Sprintf("filler-%d", i), "correct": true}
	}
	ls[1] = map[string]any{"trace_id": "seqtest-1", "correct": false}
	ls[labelsPerMessage] = map[string]any{"trace_id": "seqtest-1", "correct": true}
	body, err := json.Marshal(ls)
	require.NoError(t, err)
	code, r := post(t, lurl, "", bytes.NewReader(body))
	require.Equal(t, http.StatusAccepted, code, r.Error)
	require.Equal(t, labelsPerMessage, r.Accepted)
	require.Equal(t, 1, r.Duplicates)

	got, _ := labelsOn(t, "http-labels-last-labels", labelsPerMessage)
	var seq []clickhouse.Label
	for _, l := range got {
		if l.TraceID == "seqtest-1" {
			seq = append(seq, l)
		}
	}
	require.Len(t, seq, 1, "one label of seqtest-1 produced")
	require.True(t, seq[0].Correct, "the body's last label of seqtest-1")
	require.Equal(t, "seqtest-1", got[len(got)-1].TraceID, "where the body put its last label")
}

// F5: rows of a labels body without correct (a request batch labelled in
// part) failed the body with "correct is missing". They are skipped and
// counted now; a body of nothing else is refused (400) as an empty one is,
// and a wrong correct still fails the whole body.
func TestLabelsBodyUnlabelled(t *testing.T) {
	url, _ := server(t, "http-labels-unlabelled", nil)
	lurl := strings.TrimSuffix(url, "/v1/responses") + "/v1/labels"
	code, r := post(t, lurl, "", strings.NewReader("trace_id,model,correct\nu1,m,yes\nu2,m,\nu3,m,no\nu4,m,\n"))
	require.Equal(t, http.StatusAccepted, code, r.Error)
	require.Equal(t, Reply{Accepted: 2, Unlabelled: 2}, r)

	code, r = post(t, lurl, "", strings.NewReader(`[{"trace_id":"u5","correct":null},{"trace_id":"u6"}]`))
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "no labels: the 2 rows of the body have no correct (unlabelled); nothing was produced", r.Error)

	code, r = post(t, lurl, "", strings.NewReader("trace_id,correct\nu7,\nu8,maybe\n"))
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, r.Error, `line 3: trace u8: correct is "maybe"`)

	// F4: a whitespace trace_id, stored before (and never joined), is 400 as in CSV.
	code, r = post(t, lurl, "", strings.NewReader(`{"trace_id":"  ","correct":true}`))
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, r.Error, `line 1: trace_id "  " is only whitespace`)

	got, _ := labelsOn(t, "http-labels-unlabelled-labels", 2)
	require.Equal(t, "u1", got[0].TraceID)
	require.Equal(t, "u3", got[1].TraceID)
}

// Security: a response with a step of more than profile.MaxAlternatives
// alternatives was answered 202 and dead-lettered by the stream (too_long);
// it is refused at once with the profile operator's own reason and detail.
func TestRejectsTooManyAlternatives(t *testing.T) {
	url, h := server(t, "http-alternatives", nil)
	resp := func(id string, k int) string {
		var alts []string
		for j := range k {
			alts = append(alts, fmt.Sprintf(`{"token":"t%d","logprob":%g}`, j, -0.1-float64(j)))
		}
		step := `{"token":"t0","logprob":-0.1,"top_logprobs":[` + strings.Join(alts, ",") + `]}`
		short := `{"token":"t0","logprob":-0.1,"top_logprobs":[{"token":"t0","logprob":-0.1}]}`
		return `{"id":"` + id + `","model":"m","choices":[{"index":0,"finish_reason":"stop","logprobs":{"content":[` + short + "," + step + `]}}]}`
	}
	body := resp("k21", profile.MaxAlternatives) + "\n" + resp("k25", 25) + "\n"
	code, r := post(t, url, "", strings.NewReader(body))
	require.Equal(t, http.StatusBadRequest, code, r.Error)
	require.Zero(t, r.Accepted)
	require.Len(t, r.Rejects, 1)

	// The stream's operator on the same rows.
	rd := ingest.NewReader(strings.NewReader(body), ingest.DefaultConfig(), memory.NewGoAllocator())
	defer rd.Release()
	rec, err := rd.Next()
	require.NoError(t, err)
	defer rec.Release()
	op, err := profile.New(profile.DefaultConfig(), memory.NewGoAllocator(), nil)
	require.NoError(t, err)
	var detail []string
	out, err := op.Score(rec, func(row int, rj *profile.Reject) {
		require.Equal(t, 1, row)
		require.Equal(t, schemas.ReasonTooLong, rj.Reason)
		detail = append(detail, rj.Detail)
	})
	require.NoError(t, err)
	out.Release()
	require.Len(t, detail, 1)
	require.Equal(t, Reject{Line: 2, ID: "k25", Reason: schemas.ReasonTooLong, Detail: detail[0]}, r.Rejects[0])
	require.Equal(t, "step 2 has 25 alternatives, more than the 21 the profile is defined on (request top_logprobs=20)", detail[0])
	require.Equal(t, map[string]int{schemas.ReasonTooLong: 1}, r.Reasons)
	require.Equal(t, 1.0, testutil.ToFloat64(h.rejects.WithLabelValues(schemas.ReasonTooLong)))

	code, r = post(t, url, "", strings.NewReader(resp("k21-alone", profile.MaxAlternatives)))
	require.Equal(t, http.StatusAccepted, code, r.Error)
	require.Equal(t, []string{"k21-alone"}, consumed(t, "http-alternatives", 1), "nothing of the refused body was produced")
}
