// Package main exists only so that `go mod tidy` keeps this module's requirements; the
// binaries are built with `go build k8s.io/kubernetes/cmd/...` (see sandbox/sandbox.py).
package main

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubectl/pkg/cmd"
)

func main() {}
