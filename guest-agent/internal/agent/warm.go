package agent

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/initproc"
)

// warmCodecs builds what the agent's codecs otherwise build on first use:
// protobuf's coders of every message type in the binary (the API's, ttrpc's
// framing, google.rpc.Status, cgroup statistics), made lazily by
// reflection when a type is first marshalled or unmarshalled, and
// encoding/json's of the container init's config. In a VM to be saved as a
// snapshot the agent does it before it opens its channel, so the snapshot
// holds it done: in a resumed VM under TCG that code is then never
// translated. It returns how many message types it prepared.
//
// Measured on resumed VMs (12 alternating runs): start ~80 ms shorter, and
// 2 MiB less translation cache per VM. A booted VM would pay for the
// coders of types it never uses, so it does not do this.
func warmCodecs() int {
	n := 0
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		m := mt.New().Interface()
		// An empty message still makes the coder of every field.
		if b, err := proto.Marshal(m); err == nil {
			_ = proto.Unmarshal(b, m)
		}
		n++
		return true
	})
	initproc.WarmCodec()
	return n
}
