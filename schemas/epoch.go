package schemas

import (
	"math"
	"time"
)

// The times entrowatch accepts for a response's "created" and a label's ts:
// from 2000-01-01 to 2100-01-01, as Unix seconds or milliseconds. The two
// ranges do not overlap (milliseconds of that century would be seconds after
// the year 31000), so either is read without a hint; anything else is more
// likely a mistake than a time, and would wrap in ClickHouse's DateTime.
const (
	MinEpochSeconds = 946684800  // 2000-01-01T00:00:00Z
	MaxEpochSeconds = 4102444800 // 2100-01-01T00:00:00Z, excluded

	// EpochRange names the range in error messages.
	EpochRange = "between 2000-01-01 and 2100-01-01"
)

// EpochMillis reads v, Unix seconds or milliseconds in the accepted range,
// as milliseconds since the epoch; ok is false for anything else (NaN and
// infinities included).
func EpochMillis(v float64) (ms int64, ok bool) {
	switch {
	case v >= MinEpochSeconds && v < MaxEpochSeconds:
		return int64(math.Round(v * 1000)), true
	case v >= MinEpochSeconds*1000 && v < MaxEpochSeconds*1000:
		return int64(math.Round(v)), true
	}
	return 0, false
}

// InEpochRange reports whether t lies in the accepted range.
func InEpochRange(t time.Time) bool {
	return !t.Before(time.Unix(MinEpochSeconds, 0)) && t.Before(time.Unix(MaxEpochSeconds, 0))
}
