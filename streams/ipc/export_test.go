package ipc

import "encoding/binary"

// CompressedPrefixes returns the positions in b of the 8-byte uncompressed
// length that precedes each non-empty body buffer of every record batch in
// the Arrow IPC stream b, for tests that forge them.
func CompressedPrefixes(b []byte) []int {
	var out []int
	pos := 0
	for len(b)-pos >= 8 {
		n := int(binary.LittleEndian.Uint32(b[pos:]))
		pos += 4
		if n == 0xFFFFFFFF {
			n = int(binary.LittleEndian.Uint32(b[pos:]))
			pos += 4
		}
		if n == 0 {
			break
		}
		fb := fbuf{b: b[pos : pos+n]}
		body, err := fb.message()
		if err != nil {
			return nil
		}
		root, _ := fb.deref(0)
		m, _ := fb.table(root)
		if p := m(1); p != 0 && fb.b[p] == 3 {
			h, _ := fb.deref(m(2))
			rb, _ := fb.table(h)
			if p := rb(2); p != 0 {
				start, cnt, _ := fb.vector(p, 16)
				for i := range cnt {
					off := int(binary.LittleEndian.Uint64(fb.b[start+16*i:]))
					ln := int(binary.LittleEndian.Uint64(fb.b[start+16*i+8:]))
					if ln >= 8 {
						out = append(out, pos+n+off)
					}
				}
			}
		}
		pos += n + int(body)
	}
	return out
}

// SetDecodeFloor sets the least decoding limit (MinDecodeBytes) for a fuzz
// test and returns the function that restores it.
func SetDecodeFloor(n int) (restore func()) {
	old := decodeFloor
	decodeFloor = n
	return func() { decodeFloor = old }
}
