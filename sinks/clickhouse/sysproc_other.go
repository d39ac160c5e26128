//go:build !linux

package clickhouse

import "syscall"

// sysProcAttr: outside Linux the server is stopped only by Server.Stop.
func sysProcAttr() *syscall.SysProcAttr { return nil }
