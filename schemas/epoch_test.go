package schemas_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// EpochMillis reads Unix seconds or milliseconds of 2000..2100 (the ranges
// do not overlap) and refuses everything else, which ClickHouse's DateTime
// would wrap: 2200-01-01 stored as 2063, -1000 as 1970.
func TestEpochMillis(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    float64
		ms   int64
		ok   bool
	}{
		{"seconds", 1760000000, 1760000000000, true},
		{"fractional_seconds", 1760000000.25, 1760000000250, true},
		{"milliseconds", 1760000000123, 1760000000123, true},
		{"first_second", schemas.MinEpochSeconds, schemas.MinEpochSeconds * 1000, true},
		{"first_millisecond", schemas.MinEpochSeconds * 1000, schemas.MinEpochSeconds * 1000, true},
		{"last_millisecond", schemas.MaxEpochSeconds*1000 - 1, schemas.MaxEpochSeconds*1000 - 1, true},
		{"before_2000_seconds", schemas.MinEpochSeconds - 1, 0, false},
		{"2100_seconds", schemas.MaxEpochSeconds, 0, false},
		{"between_the_ranges", 5e9, 0, false},
		{"2100_milliseconds", schemas.MaxEpochSeconds * 1000, 0, false},
		{"2200_milliseconds", float64(time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()), 0, false},
		{"negative", -1000, 0, false},
		{"zero", 0, 0, false},
		{"nan", math.NaN(), 0, false},
		{"inf", math.Inf(1), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms, ok := schemas.EpochMillis(tc.v)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.ms, ms)
		})
	}
}

func TestInEpochRange(t *testing.T) {
	for _, tc := range []struct {
		t  time.Time
		ok bool
	}{
		{time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), true},
		{time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{time.Date(2000, 1, 1, 1, 0, 0, 0, time.FixedZone("+02", 2*3600)), false}, // 1999-12-31T23:00Z
		{time.Date(2099, 12, 31, 23, 59, 59, 999e6, time.UTC), true},
		{time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), false},
		{time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), false},
		{time.Unix(-1, 0), false},
		{time.Time{}, false},
	} {
		require.Equal(t, tc.ok, schemas.InEpochRange(tc.t), tc.t)
	}
}
