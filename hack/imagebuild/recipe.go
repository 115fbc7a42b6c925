package main

import (
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// packagesFile is where the Dockerfile puts deploy/image/packages. A RUN
// in the final stage must install that list: the base layer
// hack/build-image.sh makes with mmdebstrap holds exactly those packages,
// and no other RUN can be reproduced without a container runtime.
const packagesFile = "/usr/share/vmpod/packages"

// recipe is the final stage of the Dockerfile: what the image holds on top
// of its base and how it runs.
type recipe struct {
	Base       string // the final stage's FROM, e.g. debian:12
	Files      []file // COPY sources and destinations, in order
	Entrypoint []string
	Cmd        []string
	Env        []string // KEY=value, in order
	Labels     map[string]string
	WorkingDir string
	User       string
	Runs       []string // the RUN lines (all install packagesFile)
}

// file is one file a COPY puts in the image.
type file struct {
	Src  string // path on this machine
	Dest string // absolute path in the image
	Mode os.FileMode
}

// parseRecipe reads the final stage of a Dockerfile. Files copied from the
// context resolve under contextDir; files copied from another stage
// resolve through stageFiles ("stage:/path" -> path on this machine): the
// script builds those itself. Any instruction it cannot reproduce is an
// error, so the two builds cannot drift apart silently.
func parseRecipe(r io.Reader, contextDir string, stageFiles map[string]string) (*recipe, error) {
	res, err := parser.Parse(r)
	if err != nil {
		return nil, fmt.Errorf("parse the Dockerfile: %w", err)
	}
	last := -1
	for i, n := range res.AST.Children {
		if strings.EqualFold(n.Value, "from") {
			last = i
		}
	}
	if last < 0 {
		return nil, fmt.Errorf("the Dockerfile has no FROM")
	}
	rc := &recipe{Labels: map[string]string{}}
	for _, n := range res.AST.Children[last:] {
		args := nodeArgs(n)
		cmd := strings.ToUpper(n.Value)
		where := fmt.Sprintf("Dockerfile line %d (%s)", n.StartLine, cmd)
		switch cmd {
		case "FROM":
			if len(args) != 1 || len(n.Flags) > 0 {
				return nil, fmt.Errorf("%s: want FROM <image> with no stage name or flags, got %q %q", where, n.Flags, args)
			}
			rc.Base = args[0]
		case "RUN":
			line := strings.Join(args, " ")
			if !strings.Contains(line, packagesFile) {
				return nil, fmt.Errorf("%s: hack/build-image.sh can only reproduce the RUN that installs the packages of %s (its base layer holds them); put other steps in the base recipe of both builds", where, packagesFile)
			}
			rc.Runs = append(rc.Runs, line)
		case "COPY":
			files, err := copyFiles(n.Flags, args, contextDir, stageFiles)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			rc.Files = append(rc.Files, files...)
		case "ENTRYPOINT", "CMD":
			if n.Attributes["json"] != true {
				return nil, fmt.Errorf("%s: use the JSON form, e.g. %s [\"/usr/local/bin/vmpod\"]", where, cmd)
			}
			if cmd == "CMD" {
				rc.Cmd = args
			} else {
				rc.Entrypoint = args
			}
		case "ENV", "LABEL":
			// The parser gives key, value, separator for each pair.
			if len(args)%3 != 0 {
				return nil, fmt.Errorf("%s: want key=value pairs, got %q", where, args)
			}
			for i := 0; i < len(args); i += 3 {
				v := unquote(args[i+1])
				if cmd == "ENV" {
					rc.Env = setEnv(rc.Env, args[i], v)
				} else {
					rc.Labels[args[i]] = v
				}
			}
		case "WORKDIR":
			rc.WorkingDir = args[0]
		case "USER":
			rc.User = args[0]
		default:
			return nil, fmt.Errorf("%s: hack/imagebuild does not reproduce %s; teach it (hack/imagebuild/recipe.go) or leave it out of the final stage", where, cmd)
		}
	}
	if len(rc.Runs) == 0 {
		return nil, fmt.Errorf("the Dockerfile's final stage installs no packages from %s", packagesFile)
	}
	return rc, nil
}

// nodeArgs returns an instruction's arguments.
func nodeArgs(n *parser.Node) []string {
	var out []string
	for a := n.Next; a != nil; a = a.Next {
		out = append(out, a.Value)
	}
	return out
}

// copyFiles resolves one COPY: sources (files, not directories) and the
// destination, a directory when it ends in "/" or when there are several
// sources.
func copyFiles(flags, args []string, contextDir string, stageFiles map[string]string) ([]file, error) {
	stage := ""
	for _, f := range flags {
		if s, ok := strings.CutPrefix(f, "--from="); ok {
			stage = s
			continue
		}
		return nil, fmt.Errorf("flag %s is not supported", f)
	}
	if len(args) < 2 {
		return nil, fmt.Errorf("want COPY <src>... <dest>, got %q", args)
	}
	srcs, dest := args[:len(args)-1], args[len(args)-1]
	if !path.IsAbs(dest) {
		return nil, fmt.Errorf("destination %q is not absolute (the final stage has no WORKDIR to resolve it)", dest)
	}
	toDir := strings.HasSuffix(dest, "/") || len(srcs) > 1
	var out []file
	for _, src := range srcs {
		local := ""
		if stage != "" {
			key := stage + ":" + src
			if local = stageFiles[key]; local == "" {
				return nil, fmt.Errorf("COPY --from=%s %s: no file given for %q (flag -from %s=<path>)", stage, src, key, key)
			}
		} else {
			clean := filepath.Clean(src)
			if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
				return nil, fmt.Errorf("source %q is outside the build context", src)
			}
			local = filepath.Join(contextDir, clean)
		}
		st, err := os.Stat(local)
		if err != nil {
			return nil, err
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("source %s is not a regular file (directories are not supported)", local)
		}
		d := dest
		if toDir {
			d = path.Join(dest, path.Base(src))
		}
		out = append(out, file{Src: local, Dest: path.Clean(d), Mode: st.Mode().Perm()})
	}
	return out, nil
}

// setEnv sets key in a KEY=value list, replacing an earlier value.
func setEnv(env []string, key, value string) []string {
	for i, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			env[i] = key + "=" + value
			return env
		}
	}
	return append(env, key+"="+value)
}

// unquote removes the quotes around an ENV or LABEL value, as the shell
// would: "a b" and 'a b' are a b.
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		inner := v[1 : len(v)-1]
		if v[0] == '"' {
			inner = strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(inner)
		}
		return inner
	}
	return v
}
