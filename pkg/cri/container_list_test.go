package cri

import (
	"slices"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestListFilters(t *testing.T) {
	e := newLCEnv(t)
	webPod, dbPod, cachePod := lcPod("web"), lcPod("db"), lcPod("cache")
	cachePod.Labels["tier"] = "backend"
	dbPod.Labels["tier"] = "backend"
	web := e.runPod(t, webPod)
	db := e.runPod(t, dbPod)
	cache := e.runPod(t, cachePod)
	webVM := e.mustCreate(t, web, webPod, lcContainer("vm"))
	e.mustStart(t, webVM)
	dbVM := e.mustCreate(t, db, dbPod, lcContainer("vm"))
	cacheVM := e.mustCreate(t, cache, cachePod, lcContainer("cache"))
	e.mustStart(t, cacheVM)
	e.LV.GuestPowerOff(domainName(cacheVM))
	e.status(t, cacheVM) // notices the exit
	if _, err := e.svc.StopPodSandbox(lcCtx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: cache}); err != nil {
		t.Fatal(err)
	}

	sorted := func(ids ...string) []string { return slices.Sorted(slices.Values(ids)) }
	t.Run("sandboxes", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			f    *runtimeapi.PodSandboxFilter
			want []string
		}{
			{"all", nil, sorted(web, db, cache)},
			{"id", &runtimeapi.PodSandboxFilter{Id: db}, []string{db}},
			{"id prefix", &runtimeapi.PodSandboxFilter{Id: web[:12]}, []string{web}},
			{"unknown id", &runtimeapi.PodSandboxFilter{Id: "zzzz"}, nil},
			{"ready", &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}, sorted(web, db)},
			{"not ready", &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}}, []string{cache}},
			{"label", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "backend"}}, sorted(db, cache)},
			{"labels", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "backend", "app": "db"}}, []string{db}},
			{"label and state", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "backend"},
				State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}, []string{db}},
			{"no label match", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "frontend"}}, nil},
		} {
			if got := e.listPods(t, tc.f); !slices.Equal(got, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			}
		}
	})
	t.Run("containers", func(t *testing.T) {
		state := func(s runtimeapi.ContainerState) *runtimeapi.ContainerStateValue {
			return &runtimeapi.ContainerStateValue{State: s}
		}
		for _, tc := range []struct {
			name string
			f    *runtimeapi.ContainerFilter
			want []string
		}{
			{"all", nil, sorted(webVM, dbVM, cacheVM)},
			{"id", &runtimeapi.ContainerFilter{Id: dbVM}, []string{dbVM}},
			{"id prefix", &runtimeapi.ContainerFilter{Id: webVM[:10]}, []string{webVM}},
			{"running", &runtimeapi.ContainerFilter{State: state(runtimeapi.ContainerState_CONTAINER_RUNNING)}, []string{webVM}},
			{"created", &runtimeapi.ContainerFilter{State: state(runtimeapi.ContainerState_CONTAINER_CREATED)}, []string{dbVM}},
			{"exited", &runtimeapi.ContainerFilter{State: state(runtimeapi.ContainerState_CONTAINER_EXITED)}, []string{cacheVM}},
			{"pod sandbox", &runtimeapi.ContainerFilter{PodSandboxId: cache}, []string{cacheVM}},
			{"pod sandbox prefix", &runtimeapi.ContainerFilter{PodSandboxId: web[:12]}, []string{webVM}},
			{"label", &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"container": "vm"}}, sorted(webVM, dbVM)},
			{"label and pod", &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"container": "vm"}, PodSandboxId: db}, []string{dbVM}},
			{"pod and wrong state", &runtimeapi.ContainerFilter{PodSandboxId: db, State: state(runtimeapi.ContainerState_CONTAINER_RUNNING)}, nil},
		} {
			if got := e.listContainers(t, tc.f); !slices.Equal(got, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			}
		}
	})
}
