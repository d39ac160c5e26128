package estimate

import (
	"errors"
	"fmt"
	"math"
)

// Transfer is how well a model's estimate carries over to a domain it was
// not trained on, measured by leaving each training domain out in turn:
// fit on the others with the same configuration, estimate the left-out
// domain's accuracy as the mean P(correct) of its rows, compare with its
// true accuracy. It is the evaluation protocol's k = n-1 on the training
// data, and slightly pessimistic for the final model, which saw one domain
// more. In-domain metrics (Metrics.Domains) are near zero error by
// construction; this is the figure to expect on new traffic.
type Transfer struct {
	AEE     float64        `json:"aee"`               // mean |estimated - true| over the left-out domains
	MaxAE   float64        `json:"max_ae"`            // the largest of them
	Domains []DomainMetric `json:"domains"`           // each domain's estimate when it was left out
	Skipped []string       `json:"skipped,omitempty"` // domains not measured: the other domains' rows are of one class
}

// MeasureTransfer fits one model per training domain of t without that
// domain and returns the left-out estimates; nil when t has fewer than two
// domains. Domains whose complement has one class only are skipped (listed).
// name and cfg are those of the model being measured (see Fit).
func MeasureTransfer(t *Table, name string, cfg TrainConfig) (*Transfer, error) {
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("model %q: %w", name, err)
	}
	domains := t.Domains()
	if len(domains) < 2 {
		return nil, nil
	}
	tr := &Transfer{}
	var sum float64
	cfg.predictOnly = true // only the left-out domain's estimate is read
	for _, d := range domains {
		train := t.Subset(t.Where(func(i int) bool { return t.Domain[i] != d }))
		test := t.Subset(t.Where(func(i int) bool { return t.Domain[i] == d }))
		m, err := Fit(train, name, cfg)
		if errors.Is(err, ErrOneClass) {
			tr.Skipped = append(tr.Skipped, d)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("leaving out domain %q: %w", d, err)
		}
		predict, err := predictorFor(m, t.Features)
		if err != nil {
			return nil, err
		}
		var est, truth float64
		for i := range test.N() {
			est += predict(test.Row(i))
			truth += test.Y[i]
		}
		n := float64(test.N())
		dm := DomainMetric{Domain: d, Rows: test.N(), Estimated: est / n, True: truth / n}
		tr.Domains = append(tr.Domains, dm)
		e := math.Abs(dm.Estimated - dm.True)
		sum += e
		tr.MaxAE = math.Max(tr.MaxAE, e)
	}
	if len(tr.Domains) == 0 {
		return nil, nil
	}
	tr.AEE = sum / float64(len(tr.Domains))
	return tr, nil
}

// predictorFor returns m's P(correct) for rows whose columns are features
// (a superset of m.Features, e.g. before screening).
func predictorFor(m *Model, features []string) (Predictor, error) {
	z := make([]float64, len(m.Features))
	pos := make([]int, len(m.Features))
	identity := len(m.Features) == len(features)
	for j, f := range m.Features {
		pos[j] = -1
		for k, g := range features {
			if f == g {
				pos[j] = k
			}
		}
		if pos[j] < 0 {
			return nil, fmt.Errorf("model %q: feature %q is not among the table's", m.Model, f)
		}
		identity = identity && pos[j] == j
	}
	if identity {
		return func(x []float64) float64 { return m.Predict(x, z) }, nil
	}
	x2 := make([]float64, len(m.Features))
	return func(x []float64) float64 {
		for j, p := range pos {
			x2[j] = x[p]
		}
		return m.Predict(x2, z)
	}, nil
}
