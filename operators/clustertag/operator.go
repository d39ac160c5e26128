// Package clustertag learns topic clusters of prompts and tags scored traces
// with them, so that accuracy can be estimated per topic when callers give no
// domain, and a new, unknown topic shows up as "unclustered".
//
// Fitting: a hashing vectoriser over words and word bigrams (stop words
// dropped, light stemming), sublinear TF-IDF, L2 normalisation, optionally a
// truncated SVD (LSA), then spherical k-means with k-means++ seeding and
// restarts chosen by objective; k is fixed or picked automatically. Caller
// embeddings can replace the text vectors. The result is a versioned JSON
// artifact (Model). Tagging (Tagger, Operator) hashes tokens in place over
// the prompt's bytes and allocates nothing per prompt.
package clustertag

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/schemas"
)

// Domain sources for the domain column (Config.DomainFrom).
const (
	DomainFromCaller            = "caller"              // keep the caller's domain, even when null (an empty or blank one becomes null)
	DomainFromCluster           = "cluster"             // overwrite domain with the cluster label
	DomainFromCallerElseCluster = "caller_else_cluster" // fill a null, empty or blank domain with the cluster label
)

// ColEmbedding is the optional list<float32> column an embedding-space model
// reads prompt embeddings from.
const ColEmbedding = "embedding"

// Config configures the clustertag operator.
type Config struct {
	// Path of the artifact written by `entrowatch cluster fit`. Ignored when
	// Model is given.
	Path string `yaml:"path"`
	// Model is an already loaded artifact; it takes precedence over Path.
	Model *Model `yaml:"-"`
	// DomainFrom says which domain the estimates are sliced by: caller,
	// cluster or caller_else_cluster. Default caller_else_cluster (a null,
	// empty or blank domain is filled with the cluster label; a caller's
	// domain is kept and the cluster columns are filled beside it).
	DomainFrom string `yaml:"domain_from"`
}

// DefaultConfig returns the defaults: no artifact yet, caller_else_cluster.
func DefaultConfig() Config { return Config{DomainFrom: DomainFromCallerElseCluster} }

// Validate checks that an artifact is named and DomainFrom is known.
func (c Config) Validate() error {
	if c.Model == nil && c.Path == "" {
		return errors.New("clustertag: no cluster artifact given (set the path of a clusters.json written by entrowatch cluster fit)")
	}
	switch c.DomainFrom {
	case DomainFromCaller, DomainFromCluster, DomainFromCallerElseCluster:
		return nil
	}
	return fmt.Errorf("clustertag: domain_from %q unknown (want caller, cluster or caller_else_cluster)", c.DomainFrom)
}

// Stats counts the rows an Operator has tagged.
type Stats struct {
	Tagged      int64 // rows assigned to a cluster
	Unclustered int64 // rows with a prompt beyond every threshold or without a known term
	NoPrompt    int64 // rows with a null or empty prompt (cluster -1, distance null)
	DomainSet   int64 // rows whose domain was filled or replaced from the cluster
}

// Operator fills cluster_id, cluster_label and cluster_distance of scored.v1
// rows, and the domain as DomainFrom says. One Operator per goroutine.
//
// Null or empty prompt: cluster_id -1, cluster_label "unclustered",
// cluster_distance null. A prompt beyond its nearest cluster's threshold (or
// with no term the model knows): cluster_id -1, cluster_label "unclustered",
// cluster_distance the distance to the nearest centroid (1 without a known term).
type Operator struct {
	tagger     *Tagger
	domainFrom string
	mem        memory.Allocator
	log        *slog.Logger
	stats      Stats

	ids    *array.Int32Builder
	labels *array.StringBuilder
	dist   *array.Float32Builder
	domain *array.StringBuilder
}

// New builds the operator; it loads cfg.Path unless cfg.Model is given.
func New(cfg Config, mem memory.Allocator, log *slog.Logger) (*Operator, error) {
	if cfg.DomainFrom == "" {
		cfg.DomainFrom = DomainFromCallerElseCluster
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := cfg.Model
	if m == nil {
		var err error
		if m, err = Load(cfg.Path); err != nil {
			return nil, fmt.Errorf("clustertag: %w", err)
		}
	} else if err := m.check(); err != nil {
		return nil, fmt.Errorf("clustertag: %w", err)
	}
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log.Info("cluster artifact loaded", "version", m.Version, "space", m.Space, "clusters", len(m.Clusters), "domain_from", cfg.DomainFrom)
	return &Operator{
		tagger: m.NewTagger(), domainFrom: cfg.DomainFrom, mem: mem, log: log,
		ids: array.NewInt32Builder(mem), labels: array.NewStringBuilder(mem),
		dist: array.NewFloat32Builder(mem), domain: array.NewStringBuilder(mem),
	}, nil
}

// Name implements streams.Operator.
func (o *Operator) Name() string { return "clustertag" }

// Stats returns the counters so far.
func (o *Operator) Stats() Stats { return o.stats }

// Model returns the artifact the operator tags with.
func (o *Operator) Model() *Model { return o.tagger.m }

// Process implements streams.Operator: same rows, same order; the prompt
// and all columns it does not fill are shared with in.
func (o *Operator) Process(ctx context.Context, in arrow.RecordBatch) ([]arrow.RecordBatch, error) {
	if in == nil {
		return nil, errors.New("clustertag: Process of a nil batch")
	}
	s := in.Schema()
	idx := func(name string) (int, error) {
		i, err := schemas.Index(s, name)
		if err != nil {
			return -1, fmt.Errorf("clustertag: batch %q: %w", schemas.NameOf(s), err)
		}
		return i, nil
	}
	var cols [5]int
	for k, name := range []string{schemas.ColPrompt, schemas.ColDomain, schemas.ColClusterID, schemas.ColClusterLabel, schemas.ColClusterDistance} {
		i, err := idx(name)
		if err != nil {
			return nil, err
		}
		cols[k] = i
	}
	prompt, ok := in.Column(cols[0]).(*array.String)
	if !ok {
		return nil, fmt.Errorf("clustertag: column prompt is %s, want utf8", in.Column(cols[0]).DataType())
	}
	domain, ok := in.Column(cols[1]).(*array.String)
	if !ok {
		return nil, fmt.Errorf("clustertag: column domain is %s, want utf8", in.Column(cols[1]).DataType())
	}
	var emb *array.List
	var embVals *array.Float32
	if o.tagger.m.Space == SpaceEmbedding {
		i, err := schemas.Index(s, ColEmbedding)
		if err != nil {
			return nil, fmt.Errorf("clustertag: the artifact clusters prompt embeddings but the batch has no %q column: refit on prompts or add the column", ColEmbedding)
		}
		l, ok := in.Column(i).(*array.List)
		if !ok {
			return nil, fmt.Errorf("clustertag: column embedding is %s, want list<float32>", in.Column(i).DataType())
		}
		if embVals, ok = l.ListValues().(*array.Float32); !ok {
			return nil, fmt.Errorf("clustertag: column embedding is %s, want list<float32>", in.Column(i).DataType())
		}
		emb = l
	}
	n := int(in.NumRows())
	o.ids.Reserve(n)
	o.labels.Reserve(n)
	o.dist.Reserve(n)
	// A caller's domain that is empty or blank is no domain: a client that
	// sends "" must not put all its traffic in one slice. caller leaves the
	// column alone unless it holds such a value, which becomes null.
	fillDomain := o.domainFrom != DomainFromCaller
	if !fillDomain {
		for i := 0; i < n && !fillDomain; i++ {
			fillDomain = domain.IsValid(i) && blank(domain.Value(i))
		}
	}
	if fillDomain {
		o.domain.Reserve(n)
	}
	m := o.tagger.m
	for i := 0; i < n; i++ {
		if i&1023 == 0 {
			if err := ctx.Err(); err != nil {
				o.discard()
				return nil, err
			}
		}
		c, d, have := Unclustered, float32(0), false
		switch {
		case emb != nil:
			if emb.IsValid(i) {
				start, end := emb.ValueOffsets(i)
				if end > start {
					var err error
					c, d, err = o.tagger.TagVector(embVals.Float32Values()[start:end])
					have = err == nil
				}
			}
		case prompt.IsValid(i) && prompt.ValueLen(i) > 0:
			c, d = o.tagger.Tag(prompt.Value(i))
			have = true
		}
		label := UnclusteredLabel
		switch {
		case !have:
			o.stats.NoPrompt++
			o.ids.Append(Unclustered)
			o.dist.AppendNull()
		case c == Unclustered:
			o.stats.Unclustered++
			o.ids.Append(Unclustered)
			o.dist.Append(d)
		default:
			o.stats.Tagged++
			label = m.Clusters[c].Label
			o.ids.Append(int32(m.Clusters[c].ID))
			o.dist.Append(d)
		}
		o.labels.Append(label)
		if fillDomain {
			switch {
			case o.domainFrom != DomainFromCluster && domain.IsValid(i) && !blank(domain.Value(i)):
				o.domain.Append(domain.Value(i))
			case o.domainFrom == DomainFromCaller:
				o.domain.AppendNull()
			default:
				o.domain.Append(label)
				o.stats.DomainSet++
			}
		}
	}
	out := make([]arrow.Array, len(in.Columns()))
	copy(out, in.Columns())
	var fresh []arrow.Array
	replace := func(i int, a arrow.Array) {
		out[i] = a
		fresh = append(fresh, a)
	}
	replace(cols[2], o.ids.NewArray())
	replace(cols[3], o.labels.NewArray())
	replace(cols[4], o.dist.NewArray())
	if fillDomain {
		replace(cols[1], o.domain.NewArray())
	}
	// NewRecordBatch retains every column; unchanged ones are shared with in.
	rec := array.NewRecordBatch(s, out, int64(n))
	for _, a := range fresh {
		a.Release()
	}
	return []arrow.RecordBatch{rec}, nil
}

// blank reports whether a caller's domain is empty or only white space.
func blank(s string) bool { return strings.TrimSpace(s) == "" }

// discard empties the builders after an interrupted batch.
func (o *Operator) discard() {
	for _, b := range []array.Builder{o.ids, o.labels, o.dist, o.domain} {
		b.NewArray().Release()
	}
}
