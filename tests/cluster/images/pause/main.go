// pause holds a pod sandbox's namespaces: it sleeps until SIGTERM or SIGINT and exits 0.
// containerd's sandbox_image points at the image built from it (no registry here).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
