package estimate

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/optimize"
)

// Logreg is an L2-regularised logistic regression on standardised features.
// Its objective is scikit-learn's: sum_i w_i logloss_i + ||W||^2 / (2C),
// the intercept unpenalised.
type Logreg struct {
	W []float64 `json:"w"` // one weight per feature, on the standardised scale
	B float64   `json:"b"` // intercept (log-odds at the training means)
	C float64   `json:"c"` // inverse regularisation strength used in training (the hyper-parameter, "C=...")
}

// Score returns the log-odds for standardised features z.
func (m *Logreg) Score(z []float64) float64 {
	s := m.B
	for j, w := range m.W {
		s += w * z[j]
	}
	return s
}

func sigmoid(s float64) float64 {
	if s >= 0 {
		return 1 / (1 + math.Exp(-s))
	}
	e := math.Exp(s)
	return e / (1 + e)
}

// log1pexp returns log(1+exp(s)) without overflow.
func log1pexp(s float64) float64 {
	if s > 35 {
		return s
	}
	if s < -35 {
		return math.Exp(s)
	}
	return math.Log1p(math.Exp(s))
}

// fitLogreg fits a logistic regression on the n x d row-major matrix x (already
// standardised) with labels y and optional weights w (nil = 1), penalty 1/c.
func fitLogreg(x []float64, d int, y, w []float64, c float64) (*Logreg, error) {
	n := len(y)
	if n == 0 {
		return nil, errors.New("logistic regression: no rows")
	}
	if c <= 0 {
		return nil, fmt.Errorf("logistic regression: C = %g, want > 0", c)
	}
	wsum := 0.0
	for i := range n {
		wsum += weight(w, i)
	}
	// The objective is divided by wsum for conditioning; the minimiser is unchanged.
	lam := 1 / (c * wsum)
	// One pass computes the loss and the gradient; the optimiser asks for them
	// at the same point, so the gradient of the last point is kept.
	last := make([]float64, d+1)
	grad := make([]float64, d+1)
	sigs := make([]float64, n) // sigmoid per row at last, for the Hessian
	var lastF float64
	valid := false
	eval := func(th []float64) {
		if valid && equal(th, last) {
			return
		}
		copy(last, th)
		valid = true
		clear(grad)
		f := 0.0
		for i := range n {
			xi := x[i*d : (i+1)*d]
			s := dot(th[:d], xi) + th[d]
			wi := weight(w, i)
			// One exp serves the loss log(1+e^s) - y s and the sigmoid.
			e := math.Exp(-math.Abs(s))
			sig := 1 / (1 + e)
			if s < 0 {
				sig = e / (1 + e)
			}
			sigs[i] = sig
			f += wi * (math.Max(s, 0) + math.Log1p(e) - y[i]*s)
			r := wi * (sig - y[i])
			for j, v := range xi {
				grad[j] += r * v
			}
			grad[d] += r
		}
		f /= wsum
		for j := range grad {
			grad[j] /= wsum
		}
		for j, v := range th[:d] {
			f += 0.5 * lam * v * v
			grad[j] += lam * v
		}
		lastF = f
	}
	p := optimize.Problem{
		Func: func(th []float64) float64 { eval(th); return lastF },
		Grad: func(g, th []float64) { eval(th); copy(g, grad) },
		// The Hessian X' diag(w p (1-p)) X / wsum + lam I (intercept unpenalised).
		Hess: func(h *mat.SymDense, th []float64) {
			eval(th) // usually a no-op: Newton asks for all three at the same point
			k := d + 1
			hh := make([]float64, k*k)
			for i := range n {
				xi := x[i*d : (i+1)*d]
				q := sigs[i]
				c := weight(w, i) * q * (1 - q) / wsum
				for a := range k {
					va := 1.0
					if a < d {
						va = xi[a]
					}
					for b := a; b < k; b++ {
						vb := 1.0
						if b < d {
							vb = xi[b]
						}
						hh[a*k+b] += c * va * vb
					}
				}
			}
			for a := range k {
				if a < d {
					hh[a*k+a] += lam
				}
				for b := a; b < k; b++ {
					h.SetSym(a, b, hh[a*k+b])
				}
			}
		},
	}
	// Newton's method converges in a handful of passes; its Hessian costs
	// O(n d^2) a pass, cheaper than L-BFGS's many passes up to a few dozen
	// features (the 11 profile features plus the 7 baselines: eval's logreg_*
	// methods went from 5.0 s to about 1.5 s each). L-BFGS takes over for
	// wide tables.
	var method optimize.Method = &optimize.Newton{}
	if d > 32 {
		method = &optimize.LBFGS{}
	}
	res, err := optimize.Minimize(p, make([]float64, d+1), &optimize.Settings{GradientThreshold: 1e-7, MajorIterations: 1000}, method)
	if err != nil && res == nil {
		return nil, fmt.Errorf("logistic regression: %w", err)
	}
	// An iteration limit or a failed line search near the optimum still leaves
	// a usable solution; only a missing one is an error.
	return &Logreg{W: append([]float64(nil), res.X[:d]...), B: res.X[d], C: c}, nil
}

func equal(a, b []float64) bool {
	for i, v := range a {
		if v != b[i] {
			return false
		}
	}
	return true
}

func weight(w []float64, i int) float64 {
	if w == nil {
		return 1
	}
	return w[i]
}

func dot(a, b []float64) float64 {
	s := 0.0
	for i, v := range a {
		s += v * b[i]
	}
	return s
}

// Platt is a sigmoid calibration map p = 1 / (1 + exp(A*s + B)) (Platt 1999,
// with his smoothed targets, as scikit-learn's CalibratedClassifierCV fits it).
type Platt struct {
	A float64 `json:"a"`
	B float64 `json:"b"`
}

// Predict maps a score to a probability.
func (m *Platt) Predict(s float64) float64 { return sigmoid(-(m.A*s + m.B)) }

// fitPlatt fits A, B on scores s and labels y (weights w optional) by Newton's
// method on the smoothed-target log loss; the targets make separable data finite.
func fitPlatt(s, y, w []float64) *Platt {
	var npos, nneg float64
	for i := range y {
		if y[i] > 0.5 {
			npos += weight(w, i)
		} else {
			nneg += weight(w, i)
		}
	}
	hi := (npos + 1) / (npos + 2)
	lo := 1 / (nneg + 2)
	t := func(i int) float64 {
		if y[i] > 0.5 {
			return hi
		}
		return lo
	}
	// Parameterise p = sigmoid(a*s + b); Platt's A, B are -a, -b.
	a, b := 0.0, math.Log((npos+1)/(nneg+1))
	loss := func(a, b float64) float64 {
		f := 0.0
		for i, v := range s {
			z := a*v + b
			f += weight(w, i) * (log1pexp(z) - t(i)*z)
		}
		return f
	}
	f := loss(a, b)
	for range 200 {
		var g0, g1, h00, h01, h11 float64
		for i, v := range s {
			p := sigmoid(a*v + b)
			wi := weight(w, i)
			r := wi * (p - t(i))
			g0 += r * v
			g1 += r
			q := wi * p * (1 - p)
			h00 += q * v * v
			h01 += q * v
			h11 += q
		}
		h00 += 1e-12
		h11 += 1e-12
		det := h00*h11 - h01*h01
		if det <= 0 {
			break
		}
		da := (h11*g0 - h01*g1) / det
		db := (h00*g1 - h01*g0) / det
		step := 1.0
		var nf float64
		for {
			nf = loss(a-step*da, b-step*db)
			if nf <= f+1e-4*step*(-(g0*da+g1*db)) || step < 1e-10 {
				break
			}
			step /= 2
		}
		a, b = a-step*da, b-step*db
		done := math.Abs(f-nf) <= 1e-12*math.Max(1, math.Abs(f))
		f = nf
		if done || math.Abs(g0)+math.Abs(g1) < 1e-10 {
			break
		}
	}
	return &Platt{A: -a, B: -b}
}
