package cri

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/config"
)

func TestStatusFollowsLibvirt(t *testing.T) {
	e := newLCEnv(t)
	s, conn := e.svc, e.LV
	ready := func() *runtimeapi.RuntimeCondition {
		resp, err := s.Status(context.Background(), &runtimeapi.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.GetStatus().GetConditions() {
			if c.Type == runtimeapi.RuntimeReady {
				return c
			}
		}
		t.Fatal("no RuntimeReady condition")
		return nil
	}
	if c := ready(); !c.Status {
		t.Fatalf("RuntimeReady = %+v with libvirt up", c)
	}
	conn.SetDown(true)
	if c := ready(); c.Status || c.Reason != "LibvirtUnavailable" || c.Message == "" {
		t.Fatalf("RuntimeReady = %+v with libvirt down", c)
	}
	conn.SetDown(false)
	if c := ready(); !c.Status {
		t.Fatalf("RuntimeReady did not recover: %+v", c)
	}
}

func TestRuntimeConfigDriver(t *testing.T) {
	for _, tc := range []struct {
		driver string
		want   runtimeapi.CgroupDriver
	}{{"cgroupfs", runtimeapi.CgroupDriver_CGROUPFS}, {"systemd", runtimeapi.CgroupDriver_SYSTEMD}} {
		cfg := config.Default()
		cfg.CgroupDriver = tc.driver
		resp, err := NewService(Options{Config: cfg, Log: quietLog()}).RuntimeConfig(context.Background(), &runtimeapi.RuntimeConfigRequest{})
		if err != nil || resp.GetLinux().GetCgroupDriver() != tc.want {
			t.Errorf("%s: %v %v", tc.driver, resp, err)
		}
	}
}

func TestVersion(t *testing.T) {
	resp, err := NewService(Options{Config: config.Default(), Log: quietLog()}).Version(context.Background(), &runtimeapi.VersionRequest{})
	if err != nil || resp.RuntimeName != "vmpod" || resp.RuntimeApiVersion != "v1" {
		t.Fatalf("Version = %+v, %v", resp, err)
	}
}

func TestUnimplementedNamesArea(t *testing.T) {
	s := NewService(Options{Config: config.Default(), Log: quietLog()})
	_, err := s.CheckpointPod(context.Background(), &runtimeapi.CheckpointPodRequest{})
	if err == nil || !strings.Contains(err.Error(), "checkpoint/restore") {
		t.Fatalf("CheckpointPod err = %v", err)
	}
	if status.Code(toGRPC(err)) != codes.Unimplemented {
		t.Fatalf("code = %v", status.Code(toGRPC(err)))
	}
}
