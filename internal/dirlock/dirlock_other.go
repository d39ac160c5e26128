//go:build !unix

package dirlock

// Lock does nothing where flock is not available.
func Lock(string, string) (func() error, error) { return func() error { return nil }, nil }
