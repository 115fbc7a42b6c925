package podspec

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cloudinit"
	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/libvirttools"
)

// fuzzKeys are the annotations a fuzzed map draws from: a one-letter key
// "a".."m" in the fuzz input stands for the key at that index.
var fuzzKeys = append(slices.Clone(known), AnnIngressBandwidth, AnnEgressBandwidth)

// fuzzAnnotations decodes a fuzz input into an annotation map: records
// separated by NUL, each "key=value", a one-letter key naming an entry of
// fuzzKeys, any other key taken as it is (a typo such as vmpod.dev/cpus).
func fuzzAnnotations(s string) map[string]string {
	m := map[string]string{}
	for _, rec := range strings.Split(s, "\x00") {
		k, v, ok := strings.Cut(rec, "=")
		if !ok {
			continue
		}
		if len(k) == 1 && k[0] >= 'a' && int(k[0]-'a') < len(fuzzKeys) {
			k = fuzzKeys[k[0]-'a']
		}
		m[k] = v
	}
	return m
}

// FuzzParse parses a pod's annotations, merges a container's over them,
// and resolves the VM shape with fuzzed Linux resources, and checks:
//   - a refused map gives InvalidArgument and the zero Options;
//   - every accepted option is within its bounds (vCPUs 1..64, memory at
//     least 64Mi, sizes and rates positive, enumerations and the CPU
//     model among the accepted values, cloud-init parts as their checks
//     accept them) and is what the annotation says;
//   - the options survive the JSON of the sandbox record unchanged;
//   - Merge changes nothing in the options it starts from, and keeps
//     what the container's map does not set;
//   - an accepted shape is within the node's limits and at least 64Mi.
func FuzzParse(f *testing.F) {
	f.Add("a=4\x00b=2Gi\x00c=10Gi\x00d=scsi\x00e=host-passthrough\x00f=uefi", "a=2", int64(150000), int64(100000), int64(0))
	f.Add("g=#cloud-config\nruncmd: [[ls]]\n\x00h=availability-zone: a\x00i=version: 2\nethernets: {}\x00k=configdrive", "i={}", int64(0), int64(0), int64(3<<30))
	f.Add("l=10M\x00m=1.5G\x00vmpod.dev/cpus=2", "", int64(-1), int64(100000), int64(32<<20))
	f.Add("b=16Ei\x00c=0.5\x00a=065", "b=64Mi\x00e=EPYC-Rome-v4", int64(1<<62), int64(1), int64(1<<40))
	f.Add("j=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host\n# c\n", "h=a: .nan", int64(0), int64(0), int64(0))
	f.Add("g=#!/bin/sh\necho hi\x00h=x: {1: a, \"1\": b}", "l=1e100", int64(0), int64(0), int64(0))
	f.Add("l=1e100\x00m=9223372036854775808", "", int64(0), int64(0), int64(0))
	f.Add("l=100Ei\x00m=0.1", "", int64(0), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, pod, ctr string, quota, period, memLimit int64) {
		if !utf8.ValidString(pod) || !utf8.ValidString(ctr) {
			// Annotations reach vmpod as protobuf strings, which the CRI's
			// gRPC refuses unless they are UTF-8 (and JSON, the record's
			// format, could not keep them).
			return
		}
		podAnn, ctrAnn := fuzzAnnotations(pod), fuzzAnnotations(ctr)
		o, err := Parse(podAnn)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !reflect.DeepEqual(o, Options{}) {
				t.Fatalf("Parse refused with %v and options %+v, want InvalidArgument and none", err, o)
			}
			return
		}
		checkOptions(t, o, podAnn)
		checkRecord(t, o)

		before := cloneJSON(t, o)
		m, err := o.Merge(ctrAnn)
		if after := cloneJSON(t, o); !bytes.Equal(before, after) {
			t.Fatalf("Merge changed the options it started from:\n%s\n%s", before, after)
		}
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("Merge: %v is not InvalidArgument", err)
			}
			return
		}
		merged := map[string]string{}
		for k, v := range podAnn {
			merged[k] = v
		}
		for k, v := range ctrAnn {
			merged[k] = v
		}
		checkOptions(t, m, merged)
		checkRecord(t, m)

		cfg := config.Default()
		cfg.Accelerator = "tcg"
		cfg.MaxVCPUs = 8
		h, err := cfg.ResolveHandler("")
		if err != nil {
			t.Fatal(err)
		}
		l := Limits{MaxMemoryBytes: 8 << 30, MaxVCPUs: 8, MaxRootVolumeBytes: 100 << 30}
		res := &runtimeapi.LinuxContainerResources{CpuQuota: quota, CpuPeriod: period, MemoryLimitInBytes: memLimit}
		s, err := ResolveShape(h, 256, l, m.VM, res, "", 1<<30)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("ResolveShape: %v is not InvalidArgument", err)
			}
			return
		}
		if s.VCPUs < 1 || s.VCPUs > l.MaxVCPUs || s.MemoryBytes < libvirttools.MinMemoryBytes || s.MemoryBytes > l.MaxMemoryBytes ||
			s.RootVolumeSize < 0 || s.RootVolumeSize > l.MaxRootVolumeBytes || (s.RootVolumeSize != 0 && s.RootVolumeSize < 1<<30) {
			t.Fatalf("shape %+v is outside the limits %+v", s, l)
		}
		if memLimit > 0 && s.MemoryBytes > memLimit {
			t.Fatalf("guest RAM %d above the container's memory limit %d", s.MemoryBytes, memLimit)
		}
	})
}

var fuzzCPUModel = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9_.-]{0,63}|host-model|host-passthrough)$`)

// checkOptions checks accepted options against the annotations they came
// from, by other means than Parse's where there is one.
func checkOptions(t *testing.T, o Options, ann map[string]string) {
	t.Helper()
	fail := func(key string, got any) {
		t.Helper()
		t.Fatalf("accepted %s=%q as %v", key, ann[key], got)
	}
	if v, ok := ann[AnnVCPUs]; ok {
		if n, err := strconv.Atoi(v); err != nil || n != o.VM.VCPUs || n < 1 || n > MaxVCPUs {
			fail(AnnVCPUs, o.VM.VCPUs)
		}
	} else if o.VM.VCPUs != 0 {
		fail(AnnVCPUs, o.VM.VCPUs)
	}
	if _, ok := ann[AnnMemory]; ok != (o.VM.MemoryBytes != 0) || ok && o.VM.MemoryBytes < libvirttools.MinMemoryBytes {
		fail(AnnMemory, o.VM.MemoryBytes)
	}
	if _, ok := ann[AnnRootVolumeSize]; ok != (o.VM.RootVolumeSize != 0) || o.VM.RootVolumeSize < 0 {
		fail(AnnRootVolumeSize, o.VM.RootVolumeSize)
	}
	if v, ok := ann[AnnDiskBus]; ok != (o.VM.DiskBus != "") || ok && (v != o.VM.DiskBus ||
		!slices.Contains([]string{libvirttools.DiskBusVirtio, libvirttools.DiskBusSCSI, libvirttools.DiskBusSATA}, v)) {
		fail(AnnDiskBus, o.VM.DiskBus)
	}
	if v, ok := ann[AnnFirmware]; ok != (o.VM.Firmware != "") || ok && (v != o.VM.Firmware ||
		v != libvirttools.FirmwareBIOS && v != libvirttools.FirmwareUEFI) {
		fail(AnnFirmware, o.VM.Firmware)
	}
	if v, ok := ann[AnnCPUModel]; ok != (o.VM.CPUModel != "") || ok && (v != o.VM.CPUModel || !fuzzCPUModel.MatchString(v)) {
		fail(AnnCPUModel, o.VM.CPUModel)
	}
	ci := o.CloudInit
	if _, ok := ann[AnnDatasource]; ok != (ci.Datasource != "") ||
		ok && ci.Datasource != cloudinit.DatasourceNoCloud && ci.Datasource != cloudinit.DatasourceConfigDrive {
		fail(AnnDatasource, ci.Datasource)
	}
	if v, ok := ann[AnnUserData]; ok && (v != ci.UserData || len(v) > cloudinit.MaxUserDataBytes || cloudinit.CheckUserData(v) != nil) {
		fail(AnnUserData, len(ci.UserData))
	}
	if _, ok := ann[AnnMetaData]; ok && ci.MetaData == nil {
		fail(AnnMetaData, ci.MetaData)
	}
	if v, ok := ann[AnnNetworkConfig]; ok {
		ds, _ := cloudinit.ParseDatasource(ci.Datasource)
		if v != ci.NetworkConfig || cloudinit.CheckNetworkConfig(ds, v) != nil {
			fail(AnnNetworkConfig, ci.NetworkConfig)
		}
	}
	for _, k := range ci.SSHKeys {
		if _, err := cloudinit.ParseSSHKeys(k); err != nil || k == "" || strings.Contains(k, "\n") {
			fail(AnnSSHAuthorizedKeys, ci.SSHKeys)
		}
	}
	for key, rate := range map[string]uint64{AnnIngressBandwidth: o.Network.IngressRate, AnnEgressBandwidth: o.Network.EgressRate} {
		if _, ok := ann[key]; ok != (rate != 0) || ok && (rate < 1e3 || rate > 1e15) {
			fail(key, rate)
		}
	}
}

// checkRecord checks that o survives the sandbox record's JSON: encoded,
// decoded and encoded again it gives the same bytes.
func checkRecord(t *testing.T, o Options) {
	t.Helper()
	b := cloneJSON(t, o)
	var back Options
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("the record of %+v does not decode: %v", o, err)
	}
	if b2 := cloneJSON(t, back); !bytes.Equal(b, b2) {
		t.Fatalf("the options change through the record:\n%s\n%s", b, b2)
	}
}

func cloneJSON(t *testing.T, o Options) []byte {
	t.Helper()
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatalf("accepted options cannot be stored in the sandbox record: %v", err)
	}
	return b
}
