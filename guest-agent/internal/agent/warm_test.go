package agent

import (
	"testing"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// Every message type of the API is among those warmed, and so are the
// types of the libraries the agent speaks through (ttrpc's framing,
// google.rpc.Status).
func TestWarmCodecsCoversTheAPI(t *testing.T) {
	apiTypes := api.File_agent_proto.Messages().Len()
	if n := warmCodecs(); n < apiTypes+2 {
		t.Fatalf("warmCodecs prepared %d message types; the API alone has %d", n, apiTypes)
	}
}
