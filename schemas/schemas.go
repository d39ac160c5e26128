// Package schemas declares the Arrow schemas that travel between entrowatch's
// operators, topics and sinks. They are the single source of truth: the CSV
// header, the ClickHouse DDL and every builder follow from the declarations here.
//
// Versions: trace.v1 (one decoded LLM response, or one chunk of it), scored.v1
// (trace.v1 minus the per-step lists, plus the profile, baselines, estimate and
// topic cluster), label.v1 (ground truth fed back by labelers).
package schemas

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
)

// Schema names and versions, carried in Kafka headers and Arrow metadata.
const (
	TraceName  = "trace"
	ScoredName = "scored"
	LabelName  = "label"
	Version    = "v1"

	// MetaKey is the Arrow schema metadata key and the Kafka header key that
	// name a batch's schema, e.g. "trace.v1".
	MetaKey = "entrowatch.schema"
)

// Column names shared by several schemas.
const (
	ColTraceID      = "trace_id"
	ColTS           = "ts"
	ColModel        = "model"
	ColProvider     = "provider"
	ColLogprobsMode = "logprobs_mode"
	ColTemperature  = "temperature"
	ColTopP         = "top_p"
	ColDomain       = "domain"
	ColPrompt       = "prompt"
	ColAttributes   = "attributes"
	ColTokenLogprob = "token_logprob"
	ColTopLogprobs  = "top_logprobs"
	ColFinishReason = "finish_reason"
	ColSeq          = "seq"
	ColFinal        = "final"
	ColCorrect      = "correct"

	ColNTokens          = "n_tokens"
	ColPCorrect         = "p_correct"
	ColEstimatorVersion = "estimator_version"
	ColClusterID        = "cluster_id"
	ColClusterLabel     = "cluster_label"
	ColClusterDistance  = "cluster_distance"
	ColStatus           = "status"

	ColSource = "source"
)

// ProfileFeatures are the 11 entropy-profile features, in the order DESIGN.md
// fixes (mean, std, max, q10..q90, skew, kurt, sea).
var ProfileFeatures = []string{"mean", "std", "max", "q10", "q25", "q50", "q75", "q90", "skew", "kurt", "sea"}

// Baselines are the white-box comparison signals computed beside the profile.
var Baselines = []string{"nll_mean", "nll_max", "nll_sum", "perplexity", "min_token_prob", "margin_mean", "h_top5"}

// NumProfile and NumBaselines size the fixed feature vectors.
const (
	NumProfile   = 11
	NumBaselines = 7
)

// MaxTraceIDBytes is the longest response id (trace_id) ingest accepts,
// and the longest a label may name: ids of providers are tens of bytes,
// and a label must fit a Kafka message and a ClickHouse query with many
// others.
const MaxTraceIDBytes = 1024

// Status values of a scored row. StatusOK rows carry valid features; every other
// value is a reason for the dead-letter topic and the rejection summary.
const (
	StatusOK              = "ok"
	ReasonEmpty           = "empty"            // no generated steps
	ReasonNoLogprobs      = "no_logprobs"      // response carries no logprobs
	ReasonPositiveLogprob = "positive_logprob" // a logprob above 0 (beyond rounding)
	ReasonNaNLogprob      = "nan_logprob"      // NaN or +/-Inf where a logprob belongs (-Inf in top_logprobs is allowed)
	ReasonMalformedJSON   = "malformed_json"   // a line that is not a JSON object of the expected shape
	ReasonFailedRequest   = "failed_request"   // an API error instead of a response (a failed request in a batch output file)
	ReasonTooLong         = "too_long"         // more steps than the configured maximum
	ReasonMismatch        = "step_mismatch"    // token_logprob and top_logprobs disagree on the number of steps
	ReasonIncomplete      = "incomplete"       // chunked trace whose final chunk never arrived
	ReasonCorruptIPC      = "corrupt_ipc"      // bytes that are not an Arrow IPC stream
	ReasonWrongSchema     = "wrong_schema"     // an IPC stream whose schema is not trace.v1
	ReasonUnknownModel    = "unknown_model"    // no estimator for the model and no fallback
	ReasonBadFeature      = "bad_feature"      // NaN or Inf feature reaching the estimator
)

// Metadata returns the schema metadata naming name.Version.
func metadata(name string) arrow.Metadata {
	return arrow.NewMetadata([]string{MetaKey}, []string{name + "." + Version})
}

// Tag returns the value of MetaKey for a schema name, e.g. "trace.v1".
func Tag(name string) string { return name + "." + Version }

var (
	attrType = arrow.MapOf(arrow.BinaryTypes.String, arrow.BinaryTypes.String)
	tsType   = &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
)

// Trace is trace.v1: one row per response (or per chunk of a streamed response).
// Readers look columns up by name; only trace_id, token_logprob and top_logprobs
// are required of foreign producers, the rest default (see DESIGN.md).
var Trace = arrow.NewSchema([]arrow.Field{
	{Name: ColTraceID, Type: arrow.BinaryTypes.String},
	{Name: ColTS, Type: tsType},
	{Name: ColModel, Type: arrow.BinaryTypes.String},
	{Name: ColProvider, Type: arrow.BinaryTypes.String},
	{Name: ColLogprobsMode, Type: arrow.BinaryTypes.String},
	{Name: ColTemperature, Type: arrow.PrimitiveTypes.Float32},
	{Name: ColTopP, Type: arrow.PrimitiveTypes.Float32},
	{Name: ColDomain, Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: ColPrompt, Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: ColAttributes, Type: attrType},
	{Name: ColTokenLogprob, Type: arrow.ListOf(arrow.PrimitiveTypes.Float32)},
	{Name: ColTopLogprobs, Type: arrow.ListOf(arrow.ListOf(arrow.PrimitiveTypes.Float32))},
	{Name: ColFinishReason, Type: arrow.BinaryTypes.String},
	{Name: ColSeq, Type: arrow.PrimitiveTypes.Int32},
	{Name: ColFinal, Type: arrow.FixedWidthTypes.Boolean},
	{Name: ColCorrect, Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
}, ptr(metadata(TraceName)))

// Trace64 is trace.v1 with float64 logprob lists: what `entrowatch score` reads
// JSON into, so that features match the returned digits exactly (float32
// storage moves features by up to ~5e-8 relative). Every reader of trace.v1
// accepts both element types.
var Trace64 = func() *arrow.Schema {
	f := Trace.Fields()
	f[MustIndex(Trace, ColTokenLogprob)].Type = arrow.ListOf(arrow.PrimitiveTypes.Float64)
	f[MustIndex(Trace, ColTopLogprobs)].Type = arrow.ListOf(arrow.ListOf(arrow.PrimitiveTypes.Float64))
	md := Trace.Metadata()
	return arrow.NewSchema(f, &md)
}()

// Scored is scored.v1: one row per response after the operators ran.
// Feature and baseline columns are zero when status is not "ok".
var Scored = arrow.NewSchema(scoredFields(), ptr(metadata(ScoredName)))

func scoredFields() []arrow.Field {
	f := []arrow.Field{
		{Name: ColTraceID, Type: arrow.BinaryTypes.String},
		{Name: ColTS, Type: tsType},
		{Name: ColModel, Type: arrow.BinaryTypes.String},
		{Name: ColProvider, Type: arrow.BinaryTypes.String},
		{Name: ColLogprobsMode, Type: arrow.BinaryTypes.String},
		{Name: ColTemperature, Type: arrow.PrimitiveTypes.Float32},
		{Name: ColTopP, Type: arrow.PrimitiveTypes.Float32},
		{Name: ColDomain, Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: ColPrompt, Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: ColAttributes, Type: attrType},
		{Name: ColFinishReason, Type: arrow.BinaryTypes.String},
		{Name: ColCorrect, Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
		{Name: ColNTokens, Type: arrow.PrimitiveTypes.Int32},
	}
	for _, n := range ProfileFeatures {
		f = append(f, arrow.Field{Name: n, Type: arrow.PrimitiveTypes.Float64})
	}
	for _, n := range Baselines {
		f = append(f, arrow.Field{Name: n, Type: arrow.PrimitiveTypes.Float64})
	}
	return append(f,
		arrow.Field{Name: ColPCorrect, Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		arrow.Field{Name: ColEstimatorVersion, Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: ColClusterID, Type: arrow.PrimitiveTypes.Int32, Nullable: true},
		arrow.Field{Name: ColClusterLabel, Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: ColClusterDistance, Type: arrow.PrimitiveTypes.Float32, Nullable: true},
		arrow.Field{Name: ColStatus, Type: arrow.BinaryTypes.String},
	)
}

// Label is label.v1: ground truth for one trace.
var Label = arrow.NewSchema([]arrow.Field{
	{Name: ColTraceID, Type: arrow.BinaryTypes.String},
	{Name: ColCorrect, Type: arrow.FixedWidthTypes.Boolean},
	{Name: ColSource, Type: arrow.BinaryTypes.String},
	{Name: ColTS, Type: tsType},
}, ptr(metadata(LabelName)))

// Index returns the position of column name in s, or an error naming the schema.
func Index(s *arrow.Schema, name string) (int, error) {
	idx := s.FieldIndices(name)
	if len(idx) == 0 {
		return -1, fmt.Errorf("column %q missing from schema (have %v)", name, fieldNames(s))
	}
	return idx[0], nil
}

// MustIndex is Index for the schemas declared here, where absence is a bug.
func MustIndex(s *arrow.Schema, name string) int {
	i, err := Index(s, name)
	if err != nil {
		panic(err)
	}
	return i
}

func fieldNames(s *arrow.Schema) []string {
	out := make([]string, s.NumFields())
	for i, f := range s.Fields() {
		out[i] = f.Name
	}
	return out
}

// NameOf returns the MetaKey tag of a schema ("trace.v1"), or "" when absent.
func NameOf(s *arrow.Schema) string {
	md := s.Metadata()
	if i := md.FindKey(MetaKey); i >= 0 {
		return md.Values()[i]
	}
	return ""
}

func ptr[T any](v T) *T { return &v }
