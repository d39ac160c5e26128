package clustertag

// Contingency counts how often each true class meets each predicted cluster.
// Labels are arbitrary strings/ints; only equality matters.
type contingency struct {
	n     int
	cells map[[2]int]int
	rows  map[int]int // true class -> count
	cols  map[int]int // cluster -> count
}

func newContingency(truth, pred []int) contingency {
	c := contingency{n: len(truth), cells: map[[2]int]int{}, rows: map[int]int{}, cols: map[int]int{}}
	for i := range truth {
		c.cells[[2]int{truth[i], pred[i]}]++
		c.rows[truth[i]]++
		c.cols[pred[i]]++
	}
	return c
}

func choose2(n int) float64 { return float64(n) * float64(n-1) / 2 }

// ARI is the adjusted Rand index (Hubert and Arabie 1985) of a clustering
// against true classes: 1 for identical partitions, about 0 for random ones.
// truth and pred must have the same length. Two single-cluster partitions
// (or fewer than two items) count as identical (1).
func ARI(truth, pred []int) float64 {
	if len(truth) != len(pred) {
		panic("clustertag.ARI: truth and pred differ in length")
	}
	c := newContingency(truth, pred)
	var index, a, b float64
	for _, v := range c.cells {
		index += choose2(v)
	}
	for _, v := range c.rows {
		a += choose2(v)
	}
	for _, v := range c.cols {
		b += choose2(v)
	}
	total := choose2(c.n)
	if total == 0 {
		return 1
	}
	expected := a * b / total
	maxIndex := (a + b) / 2
	if maxIndex == expected {
		return 1
	}
	return (index - expected) / (maxIndex - expected)
}

// Purity is the share of items whose cluster's majority class is their class.
func Purity(truth, pred []int) float64 {
	if len(truth) != len(pred) {
		panic("clustertag.Purity: truth and pred differ in length")
	}
	if len(truth) == 0 {
		return 0
	}
	c := newContingency(truth, pred)
	best := map[int]int{}
	for k, v := range c.cells {
		if v > best[k[1]] {
			best[k[1]] = v
		}
	}
	sum := 0
	for _, v := range best {
		sum += v
	}
	return float64(sum) / float64(len(truth))
}

// Codes maps strings to dense integer codes in order of first appearance.
func Codes(labels []string) []int {
	m := map[string]int{}
	out := make([]int, len(labels))
	for i, l := range labels {
		c, ok := m[l]
		if !ok {
			c = len(m)
			m[l] = c
		}
		out[i] = c
	}
	return out
}
