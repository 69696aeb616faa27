package main

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func fakeProc(t *testing.T, procs map[string][2]string) string {
	t.Helper()
	dir := t.TempDir()
	for pid, p := range procs {
		d := filepath.Join(dir, pid)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "comm"), []byte(p[0]+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "cmdline"), []byte(p[1]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Not processes: ignored.
	if err := os.MkdirAll(filepath.Join(dir, "sys"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestMatchProcs(t *testing.T) {
	proc := fakeProc(t, map[string][2]string{
		"1":   {"sh", "sh\x00-c\x00top\x00"},
		"12":  {"sleep", "sleep\x004321\x00"},
		"7":   {"sleep", "sleep\x001\x00"},
		"30":  {"pgrep", "pgrep\x00sleep\x00"},
		"100": {"nginx", "nginx: master process nginx -listen :80\x00-listen\x00:80\x00"},
	})
	for _, tc := range []struct {
		pattern string
		full    bool
		want    []int
	}{
		{"sleep", false, []int{7, 12}},
		{"^sl", false, []int{7, 12}},
		{"4321", false, nil},
		{"4321", true, []int{12}},
		{"master process", true, []int{100}},
		{"master process", false, nil},
		{"pgrep", false, nil}, // itself
	} {
		got, err := matchProcs(proc, regexp.MustCompile(tc.pattern), tc.full, 30)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("matchProcs(%q, full=%v) = %v, want %v", tc.pattern, tc.full, got, tc.want)
		}
	}
}

func TestWriteShm(t *testing.T) {
	in := "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n" +
		"1234567890      32769   644               1048576  4242     0      0     0     0     0     0          0          0 1700000000                     0                     0\n" +
		"         0          5  1600                  4096     1     1      2  1000  1000  1000  1000          0          0 1700000000                     0                     0\n"
	var out strings.Builder
	if err := writeShm(&out, strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"Shared Memory Segments", "0x499602d2 32769", "1048576", "0x00000000 5", "600"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if err := writeShm(&out, strings.NewReader("key perms\n")); err == nil {
		t.Error("a header without shmid: want an error")
	}
	if err := writeShm(&out, strings.NewReader("")); err == nil {
		t.Error("an empty file: want an error")
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "nginx")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", "/nonexistent:"+dir)
	if got, err := lookPath("nginx"); err != nil || got != exe {
		t.Errorf("lookPath(nginx) = %q, %v; want %q", got, err, exe)
	}
	if got, err := lookPath("/usr/sbin/nginx"); err != nil || got != "/usr/sbin/nginx" {
		t.Errorf("a path with a slash: got %q, %v", got, err)
	}
	if _, err := lookPath("httpd"); err == nil {
		t.Error("a name not in PATH: want an error")
	}
}
