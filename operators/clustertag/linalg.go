package clustertag

import (
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/mat"
)

// csr is a sparse row-major matrix of float32; dense spaces (LSA,
// embeddings) use it too, with every column present in every row.
type csr struct {
	ptr []int
	idx []int32
	val []float32
	dim int
}

func (m *csr) rows() int { return len(m.ptr) - 1 }

func (m *csr) row(i int) ([]int32, []float32) {
	return m.idx[m.ptr[i]:m.ptr[i+1]], m.val[m.ptr[i]:m.ptr[i+1]]
}

// denseCSR wraps n rows of a dense n×dim matrix.
func denseCSR(data []float32, dim int) *csr {
	n := len(data) / dim
	m := &csr{ptr: make([]int, n+1), idx: make([]int32, n*dim), val: data, dim: dim}
	for i := 0; i < n; i++ {
		m.ptr[i+1] = (i + 1) * dim
		for j := 0; j < dim; j++ {
			m.idx[i*dim+j] = int32(j)
		}
	}
	return m
}

func normalize(v []float32) float32 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	if s == 0 {
		return 0
	}
	n := float32(math.Sqrt(s))
	inv := 1 / n
	for i := range v {
		v[i] *= inv
	}
	return n
}

// orthonormalize replaces the columns of a (rows×cols, row-major) by an
// orthonormal basis of their span (modified Gram-Schmidt, twice for
// stability). Columns that vanish are left zero.
func orthonormalize(a []float64, rows, cols int) {
	for pass := 0; pass < 2; pass++ {
		for j := 0; j < cols; j++ {
			for p := 0; p < j; p++ {
				var d float64
				for i := 0; i < rows; i++ {
					d += a[i*cols+j] * a[i*cols+p]
				}
				for i := 0; i < rows; i++ {
					a[i*cols+j] -= d * a[i*cols+p]
				}
			}
			var s float64
			for i := 0; i < rows; i++ {
				s += a[i*cols+j] * a[i*cols+j]
			}
			s = math.Sqrt(s)
			if s < 1e-12 {
				for i := 0; i < rows; i++ {
					a[i*cols+j] = 0
				}
				continue
			}
			for i := 0; i < rows; i++ {
				a[i*cols+j] /= s
			}
		}
	}
}

// mulXB returns X·B for B (X.dim × l, row-major): an n×l matrix.
func mulXB(x *csr, b []float64, l int) []float64 {
	n := x.rows()
	out := make([]float64, n*l)
	for i := 0; i < n; i++ {
		idx, val := x.row(i)
		o := out[i*l : (i+1)*l]
		for k, j := range idx {
			v := float64(val[k])
			bj := b[int(j)*l : (int(j)+1)*l]
			for c := range o {
				o[c] += v * bj[c]
			}
		}
	}
	return out
}

// mulXtB returns Xᵀ·B for B (n × l, row-major): an X.dim×l matrix.
func mulXtB(x *csr, b []float64, l int) []float64 {
	out := make([]float64, x.dim*l)
	for i := 0; i < x.rows(); i++ {
		idx, val := x.row(i)
		bi := b[i*l : (i+1)*l]
		for k, j := range idx {
			v := float64(val[k])
			o := out[int(j)*l : (int(j)+1)*l]
			for c := range o {
				o[c] += v * bi[c]
			}
		}
	}
	return out
}

// truncatedSVD returns the top r right singular vectors of X as a
// X.dim×r row-major matrix, by randomized subspace iteration (Halko,
// Martinsson and Tropp 2011) with 10 oversamples and the given power
// iterations; the small eigenproblem is solved with gonum.
func truncatedSVD(x *csr, r, powerIters int, rng *rand.Rand) []float32 {
	l := min(r+10, x.dim, x.rows())
	if r > l {
		r = l
	}
	omega := make([]float64, x.dim*l)
	for i := range omega {
		omega[i] = rng.NormFloat64()
	}
	y := mulXB(x, omega, l)
	orthonormalize(y, x.rows(), l)
	for it := 0; it < powerIters; it++ {
		z := mulXtB(x, y, l)
		orthonormalize(z, x.dim, l)
		y = mulXB(x, z, l)
		orthonormalize(y, x.rows(), l)
	}
	// Bᵀ = Xᵀ Q (dim×l); G = B Bᵀ = (Bᵀ)ᵀ Bᵀ (l×l) = W Λ Wᵀ;
	// right singular vectors of B are Bᵀ W Λ^{-1/2}.
	bt := mulXtB(x, y, l)
	btm := mat.NewDense(x.dim, l, bt)
	var g mat.SymDense
	g.SymOuterK(1, btm.T())
	var eig mat.EigenSym
	if !eig.Factorize(&g, true) {
		// Fall back to the orthonormalised basis itself; only reached on
		// degenerate input (all-zero matrix).
		out := make([]float32, x.dim*r)
		return out
	}
	vals := eig.Values(nil) // ascending
	var w mat.Dense
	eig.VectorsTo(&w)
	out := make([]float32, x.dim*r)
	for c := 0; c < r; c++ {
		col := l - 1 - c // descending order
		lam := vals[col]
		if lam <= 1e-12 {
			continue
		}
		inv := 1 / math.Sqrt(lam)
		wc := mat.Col(nil, col, &w)
		for j := 0; j < x.dim; j++ {
			var s float64
			row := bt[j*l : (j+1)*l]
			for k := 0; k < l; k++ {
				s += row[k] * wc[k]
			}
			out[j*r+c] = float32(s * inv)
		}
	}
	return out
}

// project returns X·P for P (X.dim×r float32), rows L2-normalised.
func project(x *csr, p []float32, r int) []float32 {
	n := x.rows()
	out := make([]float32, n*r)
	for i := 0; i < n; i++ {
		idx, val := x.row(i)
		o := out[i*r : (i+1)*r]
		for k, j := range idx {
			v := val[k]
			pj := p[int(j)*r : (int(j)+1)*r]
			for c := range o {
				o[c] += v * pj[c]
			}
		}
		normalize(o)
	}
	return out
}

func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }
