package policy

import "net/netip"

// What a tool needs to replay a guest's flow through the decisions
// without a network (StaticFacts, DecideConnect), taken from the network
// code itself so that the replay cannot drift from what a guest sees.

// FirstSyntheticAddr is the address a new network's synthetic DNS gives
// the first name a guest asks for. A tool replaying a lookup maps it to
// the name in StaticFacts.Synthetic and connects to it, as the guest
// would.
func FirstSyntheticAddr() netip.Addr {
	a, _ := newSynthPool().addrFor("")
	return a
}

// DefaultGateway is the host side of the guest link (its gateway and DNS
// server) until the runtime gives the guest its namespace's addresses
// (Network.SetLinkAddresses); DecideConnect's gateway argument.
func DefaultGateway() netip.Addr { return defaultGateway }
