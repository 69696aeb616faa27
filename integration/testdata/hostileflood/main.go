// Command hostileflood is what integration/hostile_flood_test.go runs in a
// container to spend the shim's resources: static, so it runs in busybox.
//
//	hostileflood udp53 N             N one-query DNS flows, each from a new source port
//	hostileflood syn N ADDR          N connections to ADDR (refused by policy)
//	hostileflood hold N SECS ADDR    hold N connections to ADDR ("resolver": the DNS server) open for SECS
//	hostileflood header N BYTES ADDR N connections each sending BYTES of unterminated header
//	hostileflood get 1 URL           one HTTP GET, printing the status and body (exit 1 on failure)
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: hostileflood udp53|syn|hold|header N ...")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "udp53":
		udp53(n)
	case "syn":
		syn(n, os.Args[3])
	case "hold":
		secs, _ := strconv.Atoi(os.Args[3])
		hold(n, time.Duration(secs)*time.Second, os.Args[4])
	case "header":
		size, _ := strconv.Atoi(os.Args[3])
		header(n, size, os.Args[4])
	case "get":
		get(os.Args[3])
	}
}

// resolver is the first nameserver of /etc/resolv.conf.
func resolver() string {
	f, err := os.Open("/etc/resolv.conf")
	if err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fs := strings.Fields(sc.Text()); len(fs) >= 2 && fs[0] == "nameserver" {
				return net.JoinHostPort(fs[1], "53")
			}
		}
	}
	return "192.168.127.1:53"
}

// query is a DNS question for a name no policy allows.
func query(id uint16) []byte {
	q := []byte{byte(id >> 8), byte(id), 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range []string{fmt.Sprintf("x%d", id), "flood", "invalid"} {
		q = append(q, byte(len(l)))
		q = append(q, l...)
	}
	return append(q, 0, 0, 1, 0, 1)
}

func udp53(n int) {
	// Every other flow goes to another address's port 53: the shim
	// answers DNS to any address.
	dsts := []string{resolver(), "93.184.215.53:53"}
	sent := 0
	var firstErr error
	for i := 0; i < n; i++ {
		c, err := net.Dial("udp", dsts[i%2])
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if _, err := c.Write(query(uint16(i))); err == nil {
			sent++
		}
		c.Close()
	}
	fmt.Printf("udp53 sent=%d first error=%v\n", sent, firstErr)
}

func syn(n int, addr string) {
	var refused int
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			refused++
			continue
		}
		c.Close()
	}
	fmt.Printf("syn refused=%d\n", refused)
}

func hold(n int, d time.Duration, addr string) {
	if addr == "resolver" {
		addr = resolver() // DNS over TCP: accepted in every mode
	}
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	var conns sync.Map
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				failed.Add(1)
				return
			}
			ok.Add(1)
			conns.Store(c, true)
		}()
	}
	wg.Wait()
	fmt.Printf("hold open=%d refused=%d\n", ok.Load(), failed.Load())
	time.Sleep(d)
	conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
}

func header(n, size int, addr string) {
	var wg sync.WaitGroup
	var cut atomic.Int64
	pad := []byte(strings.Repeat("a", 64<<10))
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nX-Pad: ", addr)
			for sent := 0; sent < size; sent += len(pad) {
				if _, err := c.Write(pad); err != nil {
					cut.Add(1)
					return
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("header cut=%d\n", cut.Load())
}

func get(url string) {
	c := &http.Client{Timeout: 15 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Println("get error:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Printf("get status=%d body=%q\n", resp.StatusCode, body)
	if resp.StatusCode != http.StatusOK {
		os.Exit(1)
	}
}
