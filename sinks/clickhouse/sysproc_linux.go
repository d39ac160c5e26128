package clickhouse

import "syscall"

// sysProcAttr makes the kernel stop the server when entrowatch dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
