//go:build !unix

package main

// lockDataDir does nothing where flock is not available.
func lockDataDir(string) (func() error, error) { return func() error { return nil }, nil }
