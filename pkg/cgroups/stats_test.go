package cgroups

import (
	"strings"
	"testing"
)

func TestStatsV1(t *testing.T) {
	testMode(t)
	root := v1Root(t, true)
	h, _ := Open(Options{Root: root, Driver: DriverCgroupfs})
	p := Placement{Parent: podPath, Path: podPath + "/vmpod-c0ffee", Hierarchies: h.hierarchies}
	for _, dir := range []string{p.Parent, p.Path} {
		scale := uint64(1)
		if dir == p.Parent {
			scale = 2 // the pod's cgroup holds more than the VM's
		}
		mem := "memory" + dir + "/"
		for f, v := range map[string]uint64{
			"memory.usage_in_bytes": 300 << 20, "memory.max_usage_in_bytes": 310 << 20, "memory.failcnt": 0,
			"memory.limit_in_bytes": 576 << 20, "memory.use_hierarchy": 1,
		} {
			write(t, root, mem+f, itoa(v*scale))
		}
		write(t, root, mem+"memory.stat", "cache 0\nrss 0\ntotal_cache "+itoa(40<<20*scale)+"\ntotal_rss "+itoa(250<<20*scale)+
			"\ntotal_inactive_file "+itoa(30<<20*scale)+"\ntotal_pgfault "+itoa(1000*scale)+"\ntotal_pgmajfault "+itoa(7*scale)+"\n")
		write(t, root, mem+"memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill "+itoa(scale-1)+"\n")
		acct := "cpu,cpuacct" + dir + "/"
		write(t, root, acct+"cpuacct.usage", itoa(5_000_000_000*scale))
		write(t, root, acct+"cpuacct.stat", "user "+itoa(300*scale)+"\nsystem "+itoa(200*scale)+"\n")
		write(t, root, acct+"cpuacct.usage_percpu", "2500000000 2500000000\n")
		write(t, root, acct+"cpuacct.usage_all", "cpu user system\n0 2000000000 500000000\n1 2000000000 500000000\n")
		write(t, root, acct+"cpu.stat", "nr_periods 100\nnr_throttled "+itoa(10*scale)+"\nthrottled_time 123456789\n")
	}
	u, err := h.Stats(p)
	if err != nil {
		t.Fatal(err)
	}
	want := Usage{CPUNs: 5_000_000_000, CPUUserNs: 3_000_000_000, CPUSystemNs: 2_000_000_000,
		CFSPeriods: 100, CFSThrottledPeriods: 10, CFSThrottledNs: 123456789,
		MemoryBytes: 300 << 20, WorkingSetBytes: 270 << 20, RSSBytes: 250 << 20, CacheBytes: 40 << 20,
		PageFaults: 1000, MajorPageFaults: 7}
	if u != want {
		t.Errorf("VM usage\n got %+v\nwant %+v", u, want)
	}
	pu, err := h.PodStats(p)
	if err != nil {
		t.Fatal(err)
	}
	if pu.CPUNs != 10_000_000_000 || pu.WorkingSetBytes != 540<<20 || pu.OOMKills != 1 {
		t.Errorf("pod usage %+v", pu)
	}
	if n := h.OOMKills(p); n != 0 {
		t.Errorf("OOM kills %d", n)
	}
	write(t, root, "memory"+p.Path+"/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
	if n := h.OOMKills(p); n != 1 {
		t.Errorf("OOM kills after one: %d", n)
	}
}

func TestStatsV2(t *testing.T) {
	testMode(t)
	root := v2Root(t)
	h, _ := Open(Options{Root: root, Driver: DriverSystemd})
	p, err := h.Plan("kubepods-pod1.slice", ctrID)
	if err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{
		"memory.current": itoa(200 << 20), "memory.max": itoa(512 << 20), "memory.peak": itoa(210 << 20),
		"memory.swap.current": "0", "memory.swap.max": "0",
		"memory.stat":   "anon " + itoa(150<<20) + "\nfile " + itoa(50<<20) + "\ninactive_file " + itoa(20<<20) + "\npgfault 900\npgmajfault 3\n",
		"memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
		"cpu.stat":      "usage_usec 7000000\nuser_usec 4000000\nsystem_usec 3000000\nnr_periods 50\nnr_throttled 5\nthrottled_usec 1000\n",
	} {
		write(t, root, p.Path+"/"+f, strings.TrimSuffix(v, "\n")+"\n")
	}
	u, err := h.Stats(p)
	if err != nil {
		t.Fatal(err)
	}
	want := Usage{CPUNs: 7_000_000_000, CPUUserNs: 4_000_000_000, CPUSystemNs: 3_000_000_000,
		CFSPeriods: 50, CFSThrottledPeriods: 5, CFSThrottledNs: 1_000_000,
		MemoryBytes: 200 << 20, WorkingSetBytes: 180 << 20, RSSBytes: 150 << 20, CacheBytes: 50 << 20,
		PageFaults: 900, MajorPageFaults: 3, OOMKills: 1}
	if u != want {
		t.Errorf("usage\n got %+v\nwant %+v", u, want)
	}
	if n := h.OOMKills(p); n != 1 {
		t.Errorf("OOM kills %d", n)
	}
}

func itoa(v uint64) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + v%10)}, b...)
		v /= 10
		if v == 0 {
			return string(b)
		}
	}
}
