package policy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// The DNS server: every question is decided by Policy.DecideDNS and
// answered (synthetic), forwarded or refused here.

const (
	synthTTL       = 300
	dnsIdleTimeout = 30 * time.Second
	// dnsUDPIdleTimeout ends a guest resolver's UDP flow: resolvers use a
	// new source port per lookup, so a flow rarely sees a second query.
	dnsUDPIdleTimeout = 5 * time.Second
	// maxDNSQueryUDP bounds a query datagram read from the guest; stub
	// queries are far smaller, and a longer one is dropped.
	maxDNSQueryUDP  = 4096
	dnsQueryTimeout = 3 * time.Second
)

// answerDNS handles one DNS message from the guest and returns the reply,
// or nil to drop it.
func (n *Network) answerDNS(ctx context.Context, query []byte, overTCP bool) []byte {
	var p dnsmessage.Parser
	hdr, err := p.Start(query)
	if err != nil || hdr.Response {
		return nil
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return dnsReply(hdr, nil, dnsmessage.RCodeFormatError, nil)
	}
	if hdr.OpCode != 0 {
		return dnsReply(hdr, qs, dnsmessage.RCodeNotImplemented, nil)
	}
	if len(qs) != 1 {
		return dnsReply(hdr, qs, dnsmessage.RCodeFormatError, nil)
	}
	q := qs[0]
	raw := q.Name.String()
	d := n.policy.DecideDNS(raw)
	rec := AuditRecord{Protocol: "dns", Host: strings.TrimSuffix(strings.ToLower(raw), "."), Method: dnsTypeName(q.Type)}
	isA := q.Type == dnsmessage.TypeA && q.Class == dnsmessage.ClassINET
	switch d.Action {
	case DNSLocalhost:
		var ans []dnsmessage.Resource
		if isA {
			ans = append(ans, aRecord(q.Name, netip.AddrFrom4([4]byte{127, 0, 0, 1})))
		}
		return dnsReply(hdr, qs, dnsmessage.RCodeSuccess, ans)
	case DNSHost:
		var ans []dnsmessage.Resource
		if isA {
			ans = append(ans, aRecord(q.Name, n.addrs.Load().gateway))
		}
		n.audit(rec.allow(d.Reason))
		return dnsReply(hdr, qs, dnsmessage.RCodeSuccess, ans)
	case DNSRefuse:
		n.audit(rec.deny(d.auditReason()))
		return dnsReply(hdr, qs, dnsmessage.RCodeNameError, nil)
	case DNSSynthesize:
		var ans []dnsmessage.Resource
		if isA {
			a, ok := n.synth.addrFor(d.Name)
			if !ok {
				n.audit(rec.deny("synthetic address pool exhausted"))
				return dnsReply(hdr, qs, dnsmessage.RCodeServerFailure, nil)
			}
			ans = append(ans, aRecord(q.Name, a))
		}
		n.audit(rec.allow(d.Reason))
		return dnsReply(hdr, qs, dnsmessage.RCodeSuccess, ans)
	}
	resp, err := n.forwardDNS(ctx, query, hdr.ID, overTCP)
	if err != nil {
		n.audit(rec.deny("upstream DNS failed: " + err.Error()))
		return dnsReply(hdr, qs, dnsmessage.RCodeServerFailure, nil)
	}
	if d.Valid {
		n.recordAnswers(d.Name, resp)
	}
	n.audit(rec.allow(d.Reason))
	return resp
}

func dnsTypeName(t dnsmessage.Type) string {
	return strings.TrimPrefix(t.String(), "Type")
}

func aRecord(name dnsmessage.Name, a netip.Addr) dnsmessage.Resource {
	return dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: synthTTL},
		Body:   &dnsmessage.AResource{A: a.As4()},
	}
}

func dnsReply(q dnsmessage.Header, qs []dnsmessage.Question, rcode dnsmessage.RCode, answers []dnsmessage.Resource) []byte {
	h := dnsmessage.Header{
		ID:                 q.ID,
		Response:           true,
		OpCode:             q.OpCode,
		Authoritative:      true,
		RecursionDesired:   q.RecursionDesired,
		RecursionAvailable: true,
		RCode:              rcode,
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), h)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil
	}
	for _, q := range qs {
		if err := b.Question(q); err != nil {
			return nil
		}
	}
	if err := b.StartAnswers(); err != nil {
		return nil
	}
	for _, r := range answers {
		if err := b.AResource(r.Header, *r.Body.(*dnsmessage.AResource)); err != nil {
			return nil
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

// recordAnswers notes the A and AAAA answers of a forwarded reply as
// addresses of name.
func (n *Network) recordAnswers(name string, resp []byte) {
	var p dnsmessage.Parser
	if _, err := p.Start(resp); err != nil {
		return
	}
	if err := p.SkipAllQuestions(); err != nil {
		return
	}
	for {
		h, err := p.AnswerHeader()
		if err != nil {
			return
		}
		switch h.Type {
		case dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return
			}
			n.records.add(name, netip.AddrFrom4(r.A), time.Duration(h.TTL)*time.Second)
		case dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return
			}
			n.records.add(name, netip.AddrFrom16(r.AAAA), time.Duration(h.TTL)*time.Second)
		default:
			if err := p.SkipAnswer(); err != nil {
				return
			}
		}
	}
}

// forwardDNS sends the guest's query unchanged to the upstream resolvers in
// turn and returns the first reply that matches it.
func (n *Network) forwardDNS(ctx context.Context, query []byte, id uint16, overTCP bool) ([]byte, error) {
	var errs []error
	for _, srv := range n.cfg.DNSServers {
		qctx, cancel := context.WithTimeout(ctx, dnsQueryTimeout)
		resp, err := n.exchangeDNS(qctx, srv, query, overTCP)
		cancel()
		if err == nil && (len(resp) < 2 || binary.BigEndian.Uint16(resp) != id) {
			err = errors.New("reply does not match the query")
		}
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", srv, err))
	}
	return nil, errors.Join(errs...)
}

func (n *Network) exchangeDNS(ctx context.Context, srv netip.AddrPort, query []byte, overTCP bool) ([]byte, error) {
	network := "udp"
	if overTCP {
		network = "tcp"
	}
	c, err := n.cfg.Dialer(ctx, network, srv.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if overTCP {
		if err := writeDNSTCP(c, query); err != nil {
			return nil, err
		}
		return readDNSTCP(c)
	}
	if _, err := c.Write(query); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		m, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		if m >= 2 && binary.BigEndian.Uint16(buf) == binary.BigEndian.Uint16(query) {
			return buf[:m], nil
		}
	}
}

func writeDNSTCP(w io.Writer, msg []byte) error {
	if len(msg) > 65535 {
		return errors.New("DNS message too long")
	}
	b := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(b, uint16(len(msg)))
	copy(b[2:], msg)
	_, err := w.Write(b)
	return err
}

func readDNSTCP(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// serveDNSUDP answers the queries the guest sends from one UDP socket,
// until it has been idle for dnsUDPIdleTimeout or the table evicts it.
func (n *Network) serveDNSUDP(conn net.Conn, uf *udpFlow) {
	defer n.udpFlows.remove(uf)
	defer conn.Close()
	buf := make([]byte, maxDNSQueryUDP+1)
	var wmu sync.Mutex
	for {
		conn.SetReadDeadline(time.Now().Add(dnsUDPIdleTimeout))
		m, err := conn.Read(buf)
		if err != nil {
			return
		}
		if m > maxDNSQueryUDP {
			continue
		}
		q := append([]byte(nil), buf[:m]...)
		n.udpFlows.touch(uf, 1)
		select {
		case n.dnsSem <- struct{}{}:
		case <-n.ctx.Done():
			n.udpFlows.touch(uf, -1)
			return
		}
		go func() {
			defer n.udpFlows.touch(uf, -1)
			defer func() { <-n.dnsSem }()
			if resp := n.answerDNS(n.ctx, q, false); resp != nil {
				wmu.Lock()
				conn.Write(resp)
				wmu.Unlock()
			}
		}()
	}
}

// serveDNSTCP answers length-prefixed queries on one guest TCP connection.
func (n *Network) serveDNSTCP(conn net.Conn) {
	defer conn.Close()
	for {
		conn.SetReadDeadline(time.Now().Add(dnsIdleTimeout))
		q, err := readDNSTCP(conn)
		if err != nil {
			return
		}
		// TCP questions share the bound on DNS work with UDP ones.
		select {
		case n.dnsSem <- struct{}{}:
		case <-n.ctx.Done():
			return
		}
		resp := n.answerDNS(n.ctx, q, true)
		<-n.dnsSem
		if resp == nil {
			return
		}
		if err := writeDNSTCP(conn, resp); err != nil {
			return
		}
	}
}
