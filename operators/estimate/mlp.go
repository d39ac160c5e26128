package estimate

import (
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/optimize"
)

// MLP is a one-hidden-layer perceptron (tanh units, logistic output) on
// standardised features.
type MLP struct {
	Hidden int       `json:"hidden"` // number of hidden units (8 as Fit trains it)
	W1     []float64 `json:"w1"`     // Hidden x d, row-major
	B1     []float64 `json:"b1"`     // hidden-unit biases, Hidden values
	W2     []float64 `json:"w2"`     // output weights, one per hidden unit
	B2     float64   `json:"b2"`     // output bias (log-odds)
	Alpha  float64   `json:"alpha"`  // L2 penalty used in training
}

// Score returns the log-odds for standardised features z; it allocates nothing.
func (m *MLP) Score(z []float64) float64 {
	d := len(z)
	s := m.B2
	for h := range m.Hidden {
		a := m.B1[h]
		for j, v := range z {
			a += m.W1[h*d+j] * v
		}
		s += m.W2[h] * math.Tanh(a)
	}
	return s
}

// fitMLP trains an MLP with full-batch L-BFGS on the scikit-learn objective
// mean logloss + alpha/(2n) ||weights||^2.
func fitMLP(x []float64, d int, y, w []float64, hidden int, alpha float64, seed uint64) (*MLP, error) {
	n := len(y)
	np := hidden*d + hidden + hidden + 1
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	th := make([]float64, np)
	lim1 := math.Sqrt(6 / float64(d+hidden))
	for i := range hidden * d {
		th[i] = (2*rng.Float64() - 1) * lim1
	}
	lim2 := math.Sqrt(6 / float64(hidden+1))
	for i := range hidden {
		th[hidden*d+hidden+i] = (2*rng.Float64() - 1) * lim2
	}
	var wsum float64
	for i := range n {
		wsum += weight(w, i)
	}
	act := make([]float64, hidden)
	unpack := func(th []float64) (w1, b1, w2 []float64, b2 float64) {
		return th[:hidden*d], th[hidden*d : hidden*d+hidden], th[hidden*d+hidden : hidden*d+2*hidden], th[np-1]
	}
	eval := func(g, th []float64) float64 {
		w1, b1, w2, b2 := unpack(th)
		if g != nil {
			clear(g)
		}
		f := 0.0
		for i := range n {
			xi := x[i*d : (i+1)*d]
			s := b2
			for h := range hidden {
				a := b1[h]
				for j, v := range xi {
					a += w1[h*d+j] * v
				}
				act[h] = math.Tanh(a)
				s += w2[h] * act[h]
			}
			wi := weight(w, i) / wsum
			f += wi * (log1pexp(s) - y[i]*s)
			if g == nil {
				continue
			}
			r := wi * (sigmoid(s) - y[i])
			gw1, gb1, gw2, _ := unpack(g)
			for h := range hidden {
				gw2[h] += r * act[h]
				da := r * w2[h] * (1 - act[h]*act[h])
				gb1[h] += da
				for j, v := range xi {
					gw1[h*d+j] += da * v
				}
			}
			g[np-1] += r
		}
		lam := alpha / wsum
		for i, v := range th[:hidden*d] {
			f += 0.5 * lam * v * v
			if g != nil {
				g[i] += lam * v
			}
		}
		for h := range hidden {
			v := w2[h]
			f += 0.5 * lam * v * v
			if g != nil {
				g[hidden*d+hidden+h] += lam * v
			}
		}
		return f
	}
	p := optimize.Problem{
		Func: func(th []float64) float64 { return eval(nil, th) },
		Grad: func(g, th []float64) { eval(g, th) },
	}
	res, err := optimize.Minimize(p, th, &optimize.Settings{GradientThreshold: 1e-6, MajorIterations: 300}, &optimize.LBFGS{})
	if res == nil {
		return nil, fmt.Errorf("mlp: %w", err)
	}
	w1, b1, w2, b2 := unpack(res.X)
	return &MLP{Hidden: hidden, W1: append([]float64(nil), w1...), B1: append([]float64(nil), b1...),
		W2: append([]float64(nil), w2...), B2: b2, Alpha: alpha}, nil
}
