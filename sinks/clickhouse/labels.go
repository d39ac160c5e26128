package clickhouse

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/entrowatch/entrowatch/internal/csvin"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// LabelRequest is one response to send to labelers.
type LabelRequest struct {
	TraceID     string  `json:"trace_id"`
	Model       string  `json:"model"`
	Domain      string  `json:"domain"`      // the response's domain: the caller's, else its cluster label
	PCorrect    float64 `json:"p_correct"`   // the response's estimated P(correct), 0 to 1
	Uncertainty float64 `json:"uncertainty"` // |p_correct - 0.5|, smaller is more uncertain
	Stratum     uint8   `json:"stratum"`     // p_correct fifth, 0..4
	// StratumRank is the response's place, from 1, in a fixed pseudo-random
	// order (by trace_id hash) of its domain's open responses of its
	// stratum; requests take rank 1 of every stratum, then rank 2, ..., so
	// that a batch covers the strata evenly.
	StratumRank uint64    `json:"stratum_rank"`
	Priority    float64   `json:"priority"`         // the domain's labeling_queue priority
	ResponseTS  time.Time `json:"response_ts"`      // the response's time; not "ts", which labels import reads as the label's
	Prompt      string    `json:"prompt,omitempty"` // the response's prompt; "" when it was stored without one
	Batch       string    `json:"batch"`            // name of the request batch (RequestLabels's batch, e.g. from BatchName)
	ExpiresAt   time.Time `json:"expires_at"`       // when the request lapses and the response may be requested again
}

// DefaultRequestExpiry is how long a label request keeps its response out
// of the labeling queue (label_requests.expires_at, migration 013).
const DefaultRequestExpiry = 7 * 24 * time.Hour

// RequestLabels takes up to perDomain responses from each of the top
// domains of labeling_queue (those with open responses), in
// labeling_candidates order, records them in label_requests so later calls
// skip them, and returns them.
func RequestLabels(ctx context.Context, conn driver.Conn, db string, domains, perDomain int, batch string, now time.Time, expireAfter time.Duration) ([]LabelRequest, error) {
	if domains <= 0 || perDomain <= 0 {
		return nil, fmt.Errorf("labels requests: domains (%d) and per-domain (%d) must be positive", domains, perDomain)
	}
	if expireAfter <= 0 {
		return nil, fmt.Errorf("labels requests: expire-after %v must be positive", expireAfter)
	}
	expires := now.Add(expireAfter).UTC().Truncate(time.Second)
	q := fmt.Sprintf(`SELECT model, domain, toFloat64(priority), toUInt8(stratum), toUInt64(stratum_rank), trace_id, toFloat64(p_correct), toFloat64(uncertainty), ts, prompt
FROM %[1]s.labeling_candidates
WHERE (model, domain) IN (SELECT model, domain FROM %[1]s.labeling_queue WHERE n_open > 0 ORDER BY priority DESC, model, domain LIMIT %[2]d)
ORDER BY priority DESC, model, domain, stratum_rank, stratum, trace_id
LIMIT %[3]d BY model, domain`, db, domains, perDomain)
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("labels requests: querying %s.labeling_candidates: %w", db, err)
	}
	defer rows.Close()
	var out []LabelRequest
	for rows.Next() {
		var r LabelRequest
		if err := rows.Scan(&r.Model, &r.Domain, &r.Priority, &r.Stratum, &r.StratumRank, &r.TraceID, &r.PCorrect, &r.Uncertainty, &r.ResponseTS, &r.Prompt); err != nil {
			return nil, fmt.Errorf("labels requests: %w", err)
		}
		r.Batch, r.ExpiresAt = batch, expires
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("labels requests: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".label_requests (trace_id, model, domain, requested_at, batch, expires_at)")
	if err != nil {
		return nil, fmt.Errorf("labels requests: recording: %w", err)
	}
	for _, r := range out {
		if err := b.Append(r.TraceID, r.Model, r.Domain, now.UTC(), batch, expires); err != nil {
			_ = b.Abort()
			return nil, fmt.Errorf("labels requests: recording: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return nil, fmt.Errorf("labels requests: recording: %w", err)
	}
	return out, nil
}

// BatchName is a name for a request batch made at now that label_requests
// does not hold yet: the time to the millisecond (20260301T120000.123Z),
// with -2, -3, .. appended while that is taken.
func BatchName(ctx context.Context, conn driver.Conn, db string, now time.Time) (string, error) {
	base := now.UTC().Format("20060102T150405.000Z")
	for i := 1; ; i++ {
		name := base
		if i > 1 {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		n, err := BatchRequests(ctx, conn, db, name)
		if err != nil {
			return "", fmt.Errorf("labels requests: naming the batch: %w", err)
		}
		if n == 0 {
			return name, nil
		}
	}
}

// BatchRequests is how many requests label_requests holds under batch name.
func BatchRequests(ctx context.Context, conn driver.Conn, db, name string) (uint64, error) {
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".label_requests WHERE batch = ?", name).Scan(&n); err != nil {
		return 0, fmt.Errorf("reading batch %q of %s.label_requests: %w", name, db, err)
	}
	return n, nil
}

// QueueState counts what the labeling queue draws from; it says why
// RequestLabels found nothing.
type QueueState struct {
	Rows      uint64 // responses in scored (deduplicated)
	Scored    uint64 // of them, valid with a p_correct (scored_ok)
	Lookback  uint64 // of those, within LookbackS before the newest response
	Labelled  uint64 // of the lookback, labelled (labels table or the trace's correct)
	Requested uint64 // of the lookback, requested and not labelled
	LookbackS uint64 // alarm_settings.queue_lookback_s
}

// Open is how many responses of the lookback could be requested.
func (s QueueState) Open() uint64 { return s.Lookback - s.Labelled - s.Requested }

// Reason says, for an operator, why nothing can be requested (when Open is
// 0) or what there is.
func (s QueueState) Reason(db string) string {
	switch {
	case s.Rows == 0:
		return fmt.Sprintf("%s.scored holds no responses yet", db)
	case s.Scored == 0:
		none := fmt.Sprintf("none of the %d responses in %s.scored is", s.Rows, db)
		if s.Rows == 1 {
			none = fmt.Sprintf("the one response in %s.scored is not", db)
		}
		return none + " valid with a p_correct; only estimated responses are queued (configure an estimator: entrowatch run's estimator key)"
	case s.Open() == 0:
		return fmt.Sprintf("every one of the %d responses in the queue lookback (the %d s before the newest response, alarm_settings.queue_lookback_s) is already labelled (%d) or requested (%d); import labels, or wait for new traffic",
			s.Lookback, s.LookbackS, s.Labelled, s.Requested)
	}
	return fmt.Sprintf("%d of the %d responses in the queue lookback are open", s.Open(), s.Lookback)
}

// LabelQueueState reads QueueState from db.
func LabelQueueState(ctx context.Context, conn driver.Conn, db string) (QueueState, error) {
	var s QueueState
	q := fmt.Sprintf(`SELECT
    (SELECT count() FROM %[1]s.scored FINAL),
    (SELECT count() FROM %[1]s.scored_ok),
    toUInt64(count()), toUInt64(countIf(labelled = 1)), toUInt64(countIf(labelled = 0 AND requested = 1)),
    toUInt64((SELECT argMax(queue_lookback_s, updated_at) FROM %[1]s.alarm_settings))
FROM %[1]s.label_status`, db)
	if err := conn.QueryRow(ctx, q).Scan(&s.Rows, &s.Scored, &s.Lookback, &s.Labelled, &s.Requested, &s.LookbackS); err != nil {
		return s, fmt.Errorf("labels requests: reading the queue state of %s: %w", db, err)
	}
	return s, nil
}

// Label is label.v1: the ground truth for one trace.
type Label struct {
	TraceID string `json:"trace_id"` // the labelled response's id, byte for byte as ingest stored it
	Correct bool   `json:"correct"`  // the response was correct
	// Source says who or what gave the label (a reviewer, a team, a tool);
	// readers fill in their default source when the input names none, and
	// refuse one over 256 bytes.
	Source string `json:"source"`
	// TS is when the label was given: of a trace's labels the newest wins
	// (see LabelVersion). Readers set it to the time of reading when the
	// input has none, or leave it zero when given a zero now (ImportLabels
	// then stamps it).
	TS time.Time `json:"ts"`
}

// InsertLabels stores labels; the newest label (by TS) of a trace wins, of
// labels with one TS the later in labels (see LabelVersion), and
// re-importing the same labels changes nothing.
func InsertLabels(ctx context.Context, conn driver.Conn, db string, labels []Label) error {
	if len(labels) == 0 {
		return nil
	}
	cols, err := schemas.ClickHouseColumns(schemas.Label)
	if err != nil {
		return err
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".labels ("+schemas.ClickHouseColumnList(cols)+", version)")
	if err != nil {
		return fmt.Errorf("labels import: %w", err)
	}
	for i, l := range labels {
		var c uint8
		if l.Correct {
			c = 1
		}
		ms := l.TS.UnixMilli()
		if err := b.Append(l.TraceID, c, l.Source, time.Unix(ms/1000, 0).UTC(), uint16(ms%1000), LabelVersion(l.TS, i, l.Correct)); err != nil {
			_ = b.Abort()
			return fmt.Errorf("labels import: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		what := fmt.Sprintf("%d labels", len(labels))
		if len(labels) == 1 {
			what = "1 label"
		}
		return fmt.Errorf("labels import: inserting %s: %w", what, err)
	}
	return nil
}

// Imported is what ImportLabels did.
type Imported struct {
	Stored  int // labels inserted
	Skipped int // labels without ts whose trace_id, correct and source were stored before
	// Reverting lists the trace ids of the skipped labels whose correct
	// differs from their trace's current (newest) label: a label given,
	// changed since, and given again (a reviewer's flip-back), which the
	// skip leaves changed, unlike a harmless re-import.
	Reverting  []string
	Duplicates int // labels dropped because another label of their trace in the file wins (OnePerTrace)
	Unscored   int // of the stored labels, those whose trace_id matches no response in scored yet
}

// ImportLabels stores labels read from a file (by ReadLabels with a zero
// now) so that importing the file again changes nothing. Of the labels of
// one trace, only the one that wins is kept first (OnePerTrace: the last,
// or the newest by ts), so that a file that labels a trace twice ends with
// its last label whatever is stored. Labels with a ts are stored as they
// are: the same file gives the same versions. A label without one (a zero
// TS) is skipped when the trace has had a label with its correct and source
// (label_seen, migration 014, which merges of labels do not thin out); the
// others get now. Stored labels whose trace matches no response in scored
// are counted, not refused: a label may arrive before its response. Nothing
// is stored when a query fails. Each query reads at most idChunkIDs trace
// ids.
func ImportLabels(ctx context.Context, conn driver.Conn, db string, labels []Label, now time.Time) (Imported, error) {
	var res Imported
	labels, res.Duplicates = OnePerTrace(labels, now)
	var undated []string
	for _, l := range labels {
		if l.TS.IsZero() {
			undated = append(undated, l.TraceID)
		}
	}
	type key struct {
		id, source string
		correct    bool
	}
	stored := map[key]bool{}
	err := forIDChunks(undated, func(chunk ch.GroupSet) error {
		rows, err := conn.Query(ctx, "SELECT DISTINCT trace_id, correct, source FROM "+db+".label_seen WHERE trace_id IN ?", chunk)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k key
			var c uint8
			if err := rows.Scan(&k.id, &c, &k.source); err != nil {
				return err
			}
			k.correct = c == 1
			stored[k] = true
		}
		return rows.Err()
	})
	if err != nil {
		return res, fmt.Errorf("labels import: reading the stored labels of %s: %w", db, err)
	}
	keep := make([]Label, 0, len(labels))
	var skipped []Label
	for _, l := range labels {
		if l.TS.IsZero() {
			if stored[key{l.TraceID, l.Source, l.Correct}] {
				res.Skipped++
				skipped = append(skipped, l)
				continue
			}
			l.TS = now.UTC()
		}
		keep = append(keep, l)
	}
	if len(skipped) > 0 {
		if res.Reverting, err = revertingLabels(ctx, conn, db, skipped); err != nil {
			return res, err
		}
	}
	ids := make([]string, len(keep))
	for i, l := range keep {
		ids[i] = l.TraceID
	}
	scored := map[string]bool{}
	err = forIDChunks(ids, func(chunk ch.GroupSet) error {
		return collectIDs(ctx, conn, scored, "SELECT DISTINCT trace_id FROM "+db+".scored WHERE trace_id IN ?", chunk)
	})
	if err != nil {
		return res, fmt.Errorf("labels import: reading the responses of %s.scored: %w", db, err)
	}
	for _, id := range ids {
		if !scored[id] {
			res.Unscored++
		}
	}
	if err := InsertLabels(ctx, conn, db, keep); err != nil {
		return res, err
	}
	res.Stored = len(keep)
	return res, nil
}

// revertingLabels returns the trace ids of skipped whose correct differs
// from their trace's current label (labels_latest), sorted.
func revertingLabels(ctx context.Context, conn driver.Conn, db string, skipped []Label) ([]string, error) {
	type cur struct {
		correct bool
		source  string
	}
	current := map[string]cur{}
	ids := make([]string, len(skipped))
	for i, l := range skipped {
		ids[i] = l.TraceID
	}
	err := forIDChunks(ids, func(chunk ch.GroupSet) error {
		rows, err := conn.Query(ctx, "SELECT trace_id, correct, source FROM "+db+".labels_latest WHERE trace_id IN ?", chunk)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id, src string
			var c uint8
			if err := rows.Scan(&id, &c, &src); err != nil {
				return err
			}
			current[id] = cur{c == 1, src}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("labels import: reading the current labels of %s: %w", db, err)
	}
	var out []string
	for _, l := range skipped {
		if c, ok := current[l.TraceID]; ok && c.correct != l.Correct { // another source saying the same changes nothing
			out = append(out, l.TraceID)
		}
	}
	slices.Sort(out)
	return out, nil
}

// idChunkIDs and idChunkBytes bound the trace ids of one IN list: ClickHouse
// refuses a query over max_query_size (256 KiB by default), and a file may
// hold 100,000 labels.
const (
	idChunkIDs   = 2000
	idChunkBytes = 64 << 10 // quoted, as the driver sends them
)

// forIDChunks calls fn with the distinct ids, a chunk at a time.
func forIDChunks(ids []string, fn func(ch.GroupSet) error) error {
	seen := make(map[string]bool, len(ids))
	var chunk []any
	size := 0
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		err := fn(ch.GroupSet{Value: chunk})
		chunk, size = nil, 0
		return err
	}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		n := 2*len(id) + 4 // every byte escaped at worst, quotes and ", "
		if len(chunk) == idChunkIDs || (len(chunk) > 0 && size+n > idChunkBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
		chunk = append(chunk, id)
		size += n
	}
	return flush()
}

// LabelVersion is the labels table's version of the seq-th label of an
// insert (migration 009): (ts in ms) * 2^21 + seq * 2 + correct. The label
// with the largest version of a trace is its label, in labels_latest and
// after merges alike: the newest ts wins, at an equal ts the later label of
// one insert (a message, file or POST body: labels without a ts all get the
// time they were read), then correct. seq beyond 2^20 - 1 counts as 2^20 - 1.
func LabelVersion(ts time.Time, seq int, correct bool) uint64 {
	const maxSeq = 1<<20 - 1
	v := uint64(max(ts.UnixMilli(), 0))<<21 | uint64(min(max(seq, 0), maxSeq))<<1
	if correct {
		v |= 1
	}
	return v
}

// LabelsRead is what ReadLabels and DecodeLabels read: the valid labels,
// and what they left out, so that a reader that stores all or nothing (a
// file import, an HTTP body) and one that stores what is valid (a topic
// message) can say so.
type LabelsRead struct {
	Labels []Label
	// Unlabelled counts the rows whose correct is empty, null or absent:
	// not labelled yet (a request batch filled in part), skipped as
	// train's CSV skips them.
	Unlabelled int
	// Duplicates counts the labels DecodeLabels dropped because another
	// label of their trace in the message wins (OnePerTrace).
	Duplicates int
	// Refused counts the invalid labels, Reasons them by reason (see
	// LabelRefusalReasons), and First lists the first maxRefusalsListed,
	// each naming its line (or row) and what is wrong with it.
	Refused int
	Reasons map[string]int
	First   []string
	// Responses counts, of the refused rows, the JSON objects without a
	// trace_id that have an id or choices: responses, not labels. They are
	// counted under trace_id in Reasons, and First lists them once, at the
	// first, with how many there are and what a label needs.
	Responses int
	resp      *responseError // the first of them
}

// maxRefusalsListed bounds LabelsRead.First.
const maxRefusalsListed = 5

// Reasons a label is refused for, the reason label of
// entrowatch_labels_refused_total: the field at fault, or malformed for a
// line that is not a label object at all.
const (
	RefusedTraceID   = "trace_id"
	RefusedCorrect   = "correct"
	RefusedSource    = "source"
	RefusedTS        = "ts"
	RefusedMalformed = "malformed"
)

// LabelRefusalReasons lists the reasons a label is refused for.
func LabelRefusalReasons() []string {
	return []string{RefusedTraceID, RefusedCorrect, RefusedSource, RefusedTS, RefusedMalformed}
}

// labelError is an invalid label: why, and the reason it is counted under.
type labelError struct {
	reason string
	err    error
}

func (e *labelError) Error() string { return e.err.Error() }
func (e *labelError) Unwrap() error { return e.err }

func refusedf(reason, format string, args ...any) error {
	return &labelError{reason: reason, err: fmt.Errorf(format, args...)}
}

// errUnlabelled is a row without correct.
var errUnlabelled = errors.New("no correct")

// responseError is a JSON object that has no trace_id but has what a
// response has: id or choices (has names them, e.g. "id and choices").
type responseError struct {
	has   string
	where string // set by LabelsRead.add
	at    int    // the index of the entry in LabelsRead.First
}

func (e *responseError) Error() string { return "no trace_id, but " + e.has }

// labelsNeed says what a label is, for a row that is something else.
const labelsNeed = `labels need trace_id,correct: JSON {"trace_id": "<the response's id>", "correct": true}, ` +
	"a CSV with the header trace_id,correct[,source,ts], or a file of entrowatch labels requests with correct filled in; " +
	"a response's own correct field is its label already, stored with it when it is ingested"

// responsesText is LabelsRead.First's entry for n response rows, e the
// first.
func responsesText(n int, e *responseError) string {
	if n == 1 {
		return fmt.Sprintf("%s: %s: this looks like a response, not a label; %s", e.where, e, labelsNeed)
	}
	return fmt.Sprintf("%s and %d more lines like it: %s: these look like responses, not labels; %s", e.where, n-1, e, labelsNeed)
}

// add files what reading one label gave: the label, a row without
// correct, or a refusal at where ("line 4", "label batch row 2").
func (r *LabelsRead) add(l Label, err error, where string) {
	switch {
	case err == nil:
		r.Labels = append(r.Labels, l)
	case errors.Is(err, errUnlabelled):
		r.Unlabelled++
	case errors.As(err, new(*responseError)):
		// Listed once, however many: a file of responses would otherwise
		// list "empty trace_id" for each of its first lines.
		r.Refused++
		if r.Reasons == nil {
			r.Reasons = map[string]int{}
		}
		r.Reasons[RefusedTraceID]++
		r.Responses++
		if r.resp == nil {
			errors.As(err, &r.resp)
			r.resp.where, r.resp.at = where, len(r.First)
			r.First = append(r.First, "")
		}
		r.First[r.resp.at] = responsesText(r.Responses, r.resp)
	default:
		reason := RefusedMalformed
		var le *labelError
		if errors.As(err, &le) {
			reason = le.reason
		}
		r.Refused++
		if r.Reasons == nil {
			r.Reasons = map[string]int{}
		}
		r.Reasons[reason]++
		if len(r.First) < maxRefusalsListed {
			r.First = append(r.First, where+": "+err.Error())
		}
	}
}

// Err is nil when no label was refused, else an error listing the first
// refusals (each with its line) and counting the rest by reason: what
// readers that store all or nothing report.
func (r *LabelsRead) Err() error {
	if r.Refused == 0 {
		return nil
	}
	msg := strings.Join(r.First, "; ")
	listed := len(r.First)
	if r.Responses > 0 {
		listed += r.Responses - 1 // one entry for them all
	}
	if more := r.Refused - listed; more > 0 {
		msg += fmt.Sprintf(" (and %d more; %d invalid labels in all: %s)", more, r.Refused, reasonCounts(r.Reasons))
	}
	return errors.New(msg)
}

// reasonCounts is "correct 3, ts 1": counts by reason, by name.
func reasonCounts(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// OnePerTrace keeps, of the labels of each trace, the one that wins in the
// labels table (the newest ts, to the millisecond; at an equal ts the later
// one, see LabelVersion), a zero TS counting as now, in their order, and
// returns how many it dropped. A file, body or message whose labels are cut
// apart (a body into messages) or partly skipped (ImportLabels) so cannot
// let an earlier label of a trace win over its last.
func OnePerTrace(labels []Label, now time.Time) ([]Label, int) {
	at := func(l Label) int64 {
		if l.TS.IsZero() {
			return now.UnixMilli()
		}
		return l.TS.UnixMilli()
	}
	win := make(map[string]int, len(labels))
	for i, l := range labels {
		if j, ok := win[l.TraceID]; !ok || at(l) >= at(labels[j]) {
			win[l.TraceID] = i
		}
	}
	if len(win) == len(labels) {
		return labels, 0
	}
	out := make([]Label, 0, len(win))
	for i, l := range labels {
		if win[l.TraceID] == i {
			out = append(out, l)
		}
	}
	return out, len(labels) - len(out)
}

// maxLabelLine bounds a line of JSON labels.
const maxLabelLine = 16 << 20

// ReadLabels parses labels from CSV (header with trace_id and correct;
// source and ts optional; other columns ignored) or JSON: JSON Lines, a
// JSON array or objects one after another, pretty-printed or not, with the
// same keys (read as ingest reads responses: in an array or pretty-printed
// objects "line N" is the N-th label). correct is one of correctValues (any
// case); a row whose correct is empty, null or absent is unlabelled and
// skipped (counted). ts is RFC 3339 or Unix seconds or milliseconds, from
// 2000 to 2100 (see labelTS), default now (the zero time when now is zero:
// ImportLabels stamps those); source defaults to defaultSource. trace_id is
// taken byte for byte, as ingest takes a response's id: one that is empty,
// longer than schemas.MaxTraceIDBytes or has leading or trailing whitespace
// is refused; in CSV, one leading apostrophe before a character a
// spreadsheet reads as a formula (or before another apostrophe) is removed
// (SpreadsheetCell). Invalid labels are refused one by one, naming their
// line, in the LabelsRead (see Err), but for JSON objects without trace_id
// that have an id or choices: responses, listed once (Responses). The error
// is for input that cannot be read as labels at all (a CSV without the
// header, one with id and no trace_id, input that is not text, a read
// error); it quotes no binary data.
func ReadLabels(r io.Reader, defaultSource string, now time.Time) (LabelsRead, error) {
	rd, _, err := readLabels(r, defaultSource, now)
	return rd, err
}

// Forms of label input, as readLabels tells them apart.
const (
	formNone = iota // nothing but blank lines
	formCSV         // a CSV header, and any rows
	formJSON
)

// readLabels is ReadLabels, and which form the input had.
func readLabels(r io.Reader, defaultSource string, now time.Time) (LabelsRead, int, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(512)
	if t := bytes.TrimLeft(head, " \t\r\n\ufeff"); len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		rd, err := readLabelsJSON(ingest.Framed(br), defaultSource, now)
		return rd, formJSON, err
	}
	if err := notText(head); err != nil {
		return LabelsRead{}, formNone, err
	}
	return readLabelsCSV(br, defaultSource, now)
}

// notText is an error saying what head, the start of an input that is not
// JSON, is when it is not text (so cannot be CSV), without quoting it; nil
// when it is text.
func notText(head []byte) error {
	if bytes.HasPrefix(head, []byte{0xff, 0xfe}) || bytes.HasPrefix(head, []byte{0xfe, 0xff}) {
		return errors.New("line 1: the input is UTF-16 text; labels are read as UTF-8: save the file as UTF-8 (in a spreadsheet: CSV UTF-8)")
	}
	binary := false
	for _, c := range head {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' || c == 0x7f {
			binary = true
			break
		}
	}
	if !binary {
		return nil
	}
	what := "binary data, not text"
	for _, m := range []struct{ magic, name string }{
		{"\x1f\x8b", "gzip-compressed data, which only labels import --in reads (send an HTTP body with Content-Encoding: gzip)"},
		{"\x28\xb5\x2f\xfd", "zstd-compressed data: decompress it first (only gzip is read, and only from a file)"},
		{"\xfd7zXZ\x00", "xz-compressed data: decompress it first (only gzip is read, and only from a file)"},
		{"BZh", "bzip2-compressed data: decompress it first (only gzip is read, and only from a file)"},
		{"PK\x03\x04", "a zip archive: extract the label file from it first"},
		{"ARROW1", "an Arrow IPC file: label.v1 Arrow is read from a topic (one stream per message), not from a file"},
	} {
		if bytes.HasPrefix(head, []byte(m.magic)) {
			what = m.name
			break
		}
	}
	return fmt.Errorf("line 1: the input is %s; labels are CSV text with a header trace_id,correct[,source,ts], or JSON", what)
}

// ReadLabelsFile is ReadLabels for a file of labels (labels import --in).
// It reads gzip-compressed CSV or JSON too, told by the first bytes (1f 8b)
// whatever the file's name; a truncated or corrupt gzip stream is an
// error, returned with the labels read before it (which a reader that
// stores all or nothing drops). An input without a single row (empty, only
// blank lines, only a CSV header, an empty JSON array) is an error too.
func ReadLabelsFile(r io.Reader, defaultSource string, now time.Time) (LabelsRead, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var in io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return LabelsRead{}, gzipError(err)
		}
		defer zr.Close()
		zbr := bufio.NewReaderSize(gzipLabels{zr}, 64<<10)
		if magic, _ := zbr.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
			return LabelsRead{}, errors.New("line 1: the file is gzip-compressed twice: decompress it once (gunzip) and import that")
		}
		in = zbr
	}
	rd, form, err := readLabels(in, defaultSource, now)
	if err != nil || len(rd.Labels)+rd.Unlabelled+rd.Refused > 0 {
		return rd, err
	}
	switch form {
	case formCSV:
		return rd, errors.New("no rows after the header: the file holds no labels")
	case formJSON:
		return rd, errors.New("the file holds no labels: its JSON has no label object")
	}
	return rd, errors.New("the file is empty (or only blank lines): it holds no labels; " +
		"want CSV with a header trace_id,correct[,source,ts] and a row per label, or JSON Lines of {\"trace_id\": \"...\", \"correct\": true|false}")
}

// gzipLabels reads a gzip stream, saying what gzip's bare errors mean.
type gzipLabels struct{ zr *gzip.Reader }

func (g gzipLabels) Read(p []byte) (int, error) {
	n, err := g.zr.Read(p)
	return n, gzipError(err)
}

// gzipError says what an error of gzip means for a label file.
func gzipError(err error) error {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("the gzip data ends abruptly (a truncated file, e.g. an interrupted copy or download): %w", err)
	case errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader):
		return fmt.Errorf("the gzip data is corrupt: %w", err)
	}
	return err
}

func readLabelsJSON(r io.Reader, defaultSource string, now time.Time) (LabelsRead, error) {
	var rd LabelsRead
	br := bufio.NewReaderSize(r, 64<<10)
	// A malformed line is filed once the next read succeeds: Framed ends
	// a value that a read error cut short (a truncated gzip file) with a
	// newline, and that error is the line's.
	var malformed error
	var malformedAt string
	for line := 1; ; line++ {
		b, tooLong, err := readLine(br, maxLabelLine)
		where := fmt.Sprintf("line %d", line)
		if err != nil && !errors.Is(err, io.EOF) {
			// The line is cut short: not a label.
			if malformed != nil && len(bytes.TrimSpace(b)) == 0 {
				where = malformedAt
			}
			return rd, fmt.Errorf("%s: %w", where, err)
		}
		if malformed != nil {
			rd.add(Label{}, malformed, malformedAt)
			malformed = nil
		}
		if tooLong {
			rd.add(Label{}, refusedf(RefusedMalformed, "longer than %d MiB, the most a line of labels may hold", maxLabelLine>>20), where)
		} else if b = bytes.TrimSpace(b); len(b) > 0 {
			l, lerr := labelFromJSON(b, defaultSource, now)
			var le *labelError
			if errors.As(lerr, &le) && le.reason == RefusedMalformed {
				malformed, malformedAt = lerr, where
			} else {
				rd.add(l, lerr, where)
			}
		}
		if err != nil { // io.EOF
			if malformed != nil {
				rd.add(Label{}, malformed, malformedAt)
			}
			return rd, nil
		}
	}
}

// readLine reads a line of br, without its newline, valid until the next
// read. A line over limit bytes is read to its end and reported too long,
// not returned.
func readLine(br *bufio.Reader, limit int) (line []byte, tooLong bool, err error) {
	var buf []byte
	for {
		frag, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if !tooLong {
				buf = append(buf, frag...)
				if len(buf) > limit {
					tooLong, buf = true, nil
				}
			}
			continue
		}
		if tooLong {
			return nil, true, err
		}
		if buf != nil {
			frag = append(buf, frag...)
		}
		frag = bytes.TrimSuffix(frag, []byte{'\n'})
		if len(frag) > limit {
			return nil, true, err
		}
		return frag, false, err
	}
}

// labelFromJSON reads one JSON label object.
func labelFromJSON(b []byte, defaultSource string, now time.Time) (Label, error) {
	if b[0] != '{' {
		return Label{}, refusedf(RefusedMalformed, `not a JSON object (a label is {"trace_id": "...", "correct": true, ...}): %s`, clipText(b))
	}
	var v struct {
		TraceID json.RawMessage `json:"trace_id"`
		Correct json.RawMessage `json:"correct"`
		Source  json.RawMessage `json:"source"`
		TS      json.RawMessage `json:"ts"`
		// What a response has: an object with them and no trace_id is a
		// response given as a label (a trace's id is its response's id).
		ID      json.RawMessage `json:"id"`
		Choices json.RawMessage `json:"choices"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return Label{}, refusedf(RefusedMalformed, "not valid JSON: %v", err)
	}
	if len(v.TraceID) == 0 || string(v.TraceID) == "null" {
		switch {
		case v.ID != nil && v.Choices != nil:
			return Label{}, &responseError{has: "id and choices"}
		case v.ID != nil:
			return Label{}, &responseError{has: "id"}
		case v.Choices != nil:
			return Label{}, &responseError{has: "choices"}
		}
	}
	correct := jsonText(v.Correct)
	if unlabelled(correct) {
		return Label{}, errUnlabelled
	}
	id, ok := jsonString(v.TraceID)
	if !ok {
		return Label{}, refusedf(RefusedTraceID, "trace_id is %s; want a string", clipText(v.TraceID))
	}
	source, ok := jsonString(v.Source)
	if !ok {
		if err := checkTraceID(id); err != nil {
			return Label{}, err
		}
		return Label{}, refusedf(RefusedSource, "trace %s: source is %s; want a string", id, clipText(v.Source))
	}
	return makeLabel(id, correct, source, jsonText(v.TS), defaultSource, now)
}

// jsonString is a JSON string's value, "" for null or absent; ok is false
// for any other JSON value.
func jsonString(raw json.RawMessage) (s string, ok bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", true
	}
	return s, json.Unmarshal(raw, &s) == nil
}

// clipText is b, or its start, for an error message (see shownCell).
func clipText(b []byte) string { return shownCell(string(b)) }

func readLabelsCSV(r io.Reader, defaultSource string, now time.Time) (LabelsRead, int, error) {
	var rd LabelsRead
	cr := csvin.NewReader(r)
	cr.FieldsPerRecord = -1
	var header []string
	for {
		var err error
		header, err = cr.Read()
		if err == io.EOF {
			return rd, formNone, nil
		}
		if err != nil {
			return rd, formNone, fmt.Errorf("line 1: %w", err)
		}
		// Lines of blanks before the header are not it.
		if len(header) > 1 || strings.TrimSpace(header[0]) != "" {
			break
		}
	}
	hline, _ := cr.FieldPos(0)
	at := fmt.Sprintf("line %d", hline)
	idx := map[string]int{}
	for i, h := range header {
		name := strings.TrimSpace(h)
		if j, dup := idx[name]; dup && name != "" {
			return rd, formNone, fmt.Errorf("%s: column %q appears twice in the header (columns %d and %d): it is not clear which one to read; rename or drop one", at, name, j+1, i+1)
		}
		idx[name] = i
	}
	if _, ok := idx[schemas.ColTraceID]; !ok {
		if _, ok := idx["id"]; ok {
			return rd, formNone, fmt.Errorf("%s: header %s has id but no trace_id: this looks like a table of responses (as entrowatch score and labels export write), not labels; %s",
				at, shownHeader(header), labelsNeed)
		}
		return rd, formNone, fmt.Errorf("%s: header %s lacks trace_id (need trace_id,correct[,source,ts])", at, shownHeader(header))
	}
	if _, ok := idx[schemas.ColCorrect]; !ok {
		return rd, formNone, fmt.Errorf("%s: header %s lacks correct (need trace_id,correct[,source,ts])", at, shownHeader(header))
	}
	cell := func(rec []string, name string) string {
		if i, ok := idx[name]; ok && i < len(rec) {
			return rec[i]
		}
		return ""
	}
	last := hline // the line the last record ended on
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return rd, formCSV, nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return rd, formCSV, err // it names its line
			}
			// A read error (a truncated gzip file, say); the record cut
			// short, returned with it, is not a label.
			return rd, formCSV, fmt.Errorf("line %d: %w", last+1, err)
		}
		// trace_id byte for byte (but for the apostrophe SpreadsheetCell
		// puts before a formula), the others trimmed.
		l, err := makeLabel(unSpreadsheet(cell(rec, schemas.ColTraceID)), strings.TrimSpace(cell(rec, schemas.ColCorrect)),
			strings.TrimSpace(cell(rec, schemas.ColSource)), strings.TrimSpace(cell(rec, schemas.ColTS)), defaultSource, now)
		line, _ := cr.FieldPos(0) // the record's first line, counting lines inside quoted fields
		last, _ = cr.FieldPos(len(rec) - 1)
		last += strings.Count(rec[len(rec)-1], "\n")
		rd.add(l, err, fmt.Sprintf("line %d", line))
	}
}

// shownHeader is a CSV header for an error message: its cells, clipped,
// with those that are not printable text escaped.
func shownHeader(header []string) string {
	const most = 12
	cells := make([]string, 0, min(len(header), most+1))
	for i, h := range header {
		if i == most {
			cells = append(cells, fmt.Sprintf("... (%d columns)", len(header)))
			break
		}
		cells = append(cells, shownCell(h))
	}
	return "[" + strings.Join(cells, " ") + "]"
}

// shownCell is a cell for an error message: as it is when it is short
// printable text, else clipped and escaped (%q).
func shownCell(s string) string {
	clipped := false
	if len(s) > 40 {
		s, clipped = strings.ToValidUTF8(s[:40], ""), true
	}
	printable := utf8.ValidString(s)
	for _, r := range s {
		if !unicode.IsPrint(r) {
			printable = false
			break
		}
	}
	if !printable {
		s = strconv.Quote(s)
	}
	if clipped {
		s += "..."
	}
	return s
}

// spreadsheetFirst are the first characters that make a spreadsheet read a
// CSV cell as a formula (OWASP's list: = + - @, tab and carriage return),
// and the apostrophe that SpreadsheetCell puts before them.
const spreadsheetFirst = "=+-@\t\r'"

// SpreadsheetCell is s as a CSV cell that a spreadsheet shows as text
// rather than runs as a formula: one apostrophe is put before s when it
// starts with = + - @, a tab, a carriage return or an apostrophe (the
// last so that the apostrophe ReadLabels removes is always one put here).
// Label request files are opened by people in spreadsheets, and their
// trace ids, prompts and domains come from whoever sent the responses.
func SpreadsheetCell(s string) string {
	if s != "" && strings.IndexByte(spreadsheetFirst, s[0]) >= 0 {
		return "'" + s
	}
	return s
}

// unSpreadsheet undoes SpreadsheetCell: the apostrophe before one of
// spreadsheetFirst is removed. An id of a CSV that starts with an
// apostrophe followed by anything else is the id.
func unSpreadsheet(s string) string {
	if len(s) >= 2 && s[0] == '\'' && strings.IndexByte(spreadsheetFirst, s[1]) >= 0 {
		return s[1:]
	}
	return s
}

// jsonText is a JSON value as the text makeLabel reads: a string decoded
// (escapes resolved, blanks trimmed), a number or literal as written, null
// and absent as "".
func jsonText(raw json.RawMessage) string {
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return strings.TrimSpace(str)
	}
	return strings.TrimSpace(string(raw))
}

// unlabelled reports whether a label's correct, as text, says the row has
// no label yet.
func unlabelled(correct string) bool {
	return correct == "" || strings.EqualFold(correct, "null")
}

// correctValues is what a label's correct may be, for error messages.
const correctValues = "true/false, t/f, yes/no or 1/0 (any case; the spellings train's CSV takes; empty for a row not labelled yet, skipped)"

// maxSourceBytes bounds a label's source (a reviewer, a team, a tool).
const maxSourceBytes = 256

// checkTraceID refuses a trace_id no response can have, or one that would
// not match its response: ingest stores a response's id byte for byte, so a
// label's surrounding whitespace is a mistake, not part of the id.
func checkTraceID(id string) error {
	switch {
	case id == "":
		return refusedf(RefusedTraceID, "empty trace_id")
	case len(id) > schemas.MaxTraceIDBytes:
		return refusedf(RefusedTraceID, "trace_id %.40q... of %d bytes, more than the %d a response id may have (entrowatch ingest refuses longer ones)", id, len(id), schemas.MaxTraceIDBytes)
	case strings.TrimSpace(id) == "":
		return refusedf(RefusedTraceID, "trace_id %q is only whitespace", id)
	case strings.TrimSpace(id) != id:
		return refusedf(RefusedTraceID, "trace_id %q has leading or trailing whitespace: labels join responses by their id byte for byte; remove it", id)
	}
	return nil
}

// newLabel is a label of trace id from source (defaultSource when empty),
// both checked.
func newLabel(id, source, defaultSource string) (Label, error) {
	if err := checkTraceID(id); err != nil {
		return Label{}, err
	}
	if len(source) > maxSourceBytes {
		return Label{}, refusedf(RefusedSource, "trace %s: source of %d bytes, more than %d", id, len(source), maxSourceBytes)
	}
	if source == "" {
		source = defaultSource
	}
	return Label{TraceID: id, Source: source}, nil
}

// makeLabel reads a label from the text of its fields; it returns
// errUnlabelled when correct is empty.
func makeLabel(id, correct, source, ts, defaultSource string, now time.Time) (Label, error) {
	if unlabelled(correct) {
		return Label{}, errUnlabelled
	}
	l, err := newLabel(id, source, defaultSource)
	if err != nil {
		return Label{}, err
	}
	l.TS = now.UTC()
	switch strings.ToLower(correct) {
	case "true", "t", "yes", "1", "1.0":
		l.Correct = true
	case "false", "f", "no", "0", "0.0":
	default:
		return Label{}, refusedf(RefusedCorrect, "trace %s: correct is %q; want %s", id, correct, correctValues)
	}
	if ts != "" && ts != "null" {
		t, err := labelTS(ts, now)
		if err != nil {
			return Label{}, &labelError{reason: RefusedTS, err: fmt.Errorf("trace %s: %w", id, err)}
		}
		l.TS = t
	}
	return l, nil
}

// tsForms is what a label's ts may be, for error messages.
const tsForms = "want RFC 3339 (e.g. 2026-03-01T12:00:00Z) or Unix seconds or milliseconds, " + schemas.EpochRange + ", or no ts (the time the label is read)"

// labelTS reads a label's ts: RFC 3339, or Unix seconds or milliseconds
// (told apart by their range, as a response's created is), all in the range
// of schemas.InEpochRange and no later than now plus maxLabelAhead (now:
// the time the label is read; the zero time is the wall clock). Outside it
// ClickHouse's DateTime would wrap the time (2200 stored as 2063, winning
// over every later label; -1000 as 1970).
func labelTS(ts string, now time.Time) (time.Time, error) {
	var t time.Time
	if v, err := strconv.ParseFloat(ts, 64); err == nil {
		ms, ok := schemas.EpochMillis(v)
		if !ok {
			return time.Time{}, fmt.Errorf("ts %s is out of range: %s", ts, tsForms)
		}
		t = time.UnixMilli(ms).UTC()
	} else {
		if t, err = time.Parse(time.RFC3339Nano, ts); err != nil {
			return time.Time{}, fmt.Errorf("ts %q is not a time: %s", ts, tsForms)
		}
		if !schemas.InEpochRange(t) {
			return time.Time{}, fmt.Errorf("ts %s is out of range: %s", ts, tsForms)
		}
	}
	if err := labelAhead(t, now); err != nil {
		return time.Time{}, fmt.Errorf("ts %s %w", ts, err)
	}
	return t.UTC(), nil
}

// maxLabelAhead is how far in the future a label's ts may be (clock skew):
// the newest label of a trace wins, so a label dated in 2099 (a typo, a
// wrong clock) would win over every correction made until then, each
// reported stored.
const maxLabelAhead = 5 * time.Minute

// labelAhead refuses a ts later than now (the wall clock when zero) plus
// maxLabelAhead.
func labelAhead(t, now time.Time) error {
	if now.IsZero() {
		now = time.Now()
	}
	if t.After(now.Add(maxLabelAhead)) {
		return fmt.Errorf("is in the future (now is %s): the newest label of a trace wins, so it would win over every correction until then; give the time the label was made, or no ts", now.UTC().Format(time.RFC3339))
	}
	return nil
}

// labelsFromRecord adds the rows of a label.v1 batch to rd, each checked as
// ReadLabels checks a line: a null correct is unlabelled; a null, empty or
// whitespace-padded trace_id and a trace_id or source over their bounds are
// refused; a null or empty source is defaultSource; a null ts is now, and
// another outside 2000..2100 is refused. Rows are numbered from row0 (the
// rows of the message's earlier batches). Strings are copied: the labels
// outlive the batch.
func labelsFromRecord(rec arrow.RecordBatch, defaultSource string, now time.Time, rd *LabelsRead, row0 int) error {
	sc := rec.Schema()
	var ids, srcs *array.String
	var corr *array.Boolean
	var tss *array.Timestamp
	for _, c := range []struct {
		name string
		dst  any
	}{{schemas.ColTraceID, &ids}, {schemas.ColCorrect, &corr}, {schemas.ColSource, &srcs}, {schemas.ColTS, &tss}} {
		i, err := schemas.Index(sc, c.name)
		if err != nil {
			return fmt.Errorf("label batch: %w", err)
		}
		a := rec.Column(i)
		ok := false
		switch d := c.dst.(type) {
		case **array.String:
			*d, ok = a.(*array.String)
		case **array.Boolean:
			*d, ok = a.(*array.Boolean)
		case **array.Timestamp:
			*d, ok = a.(*array.Timestamp)
		}
		if !ok {
			return fmt.Errorf("label batch: column %s has type %s, want label.v1's", c.name, a.DataType())
		}
	}
	unit := tss.DataType().(*arrow.TimestampType).Unit
	for i := range int(rec.NumRows()) {
		where := fmt.Sprintf("label batch row %d", row0+i)
		if corr.IsNull(i) {
			rd.add(Label{}, errUnlabelled, where)
			continue
		}
		var id, src string
		if ids.IsValid(i) {
			id = strings.Clone(ids.Value(i))
		}
		if srcs.IsValid(i) {
			src = strings.Clone(srcs.Value(i))
		}
		l, err := newLabel(id, src, defaultSource)
		if err == nil {
			l.Correct, l.TS = corr.Value(i), now.UTC()
			if tss.IsValid(i) {
				l.TS = tss.Value(i).ToTime(unit).UTC()
				if !schemas.InEpochRange(l.TS) {
					err = refusedf(RefusedTS, "trace %s: ts %s is not %s (a producer's unit or clock is wrong; a null ts is the time the label is read)", id, l.TS.Format(time.RFC3339Nano), schemas.EpochRange)
				} else if aerr := labelAhead(l.TS, now); aerr != nil {
					err = refusedf(RefusedTS, "trace %s: ts %s %v", id, l.TS.Format(time.RFC3339Nano), aerr)
				}
			}
		}
		rd.add(l, err, where)
	}
	return nil
}
