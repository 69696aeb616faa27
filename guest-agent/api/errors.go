package api

// ProcessStartFailed starts the message of the FailedPrecondition error the
// agent returns when a container's process cannot be started (a missing
// binary, a bad working directory): the host recognises it by this prefix
// to report the failure in the words users know from runc.
const ProcessStartFailed = "unable to start container process"

// DebugKernelArg on the guest kernel's command line turns the agent's debug
// lines on (per-process steps on the serial console); the host adds it when
// its own log level is debug or trace. Without it the console carries only
// what explains a failed boot or container, each line costing the guest
// about a millisecond of emulated serial output.
const DebugKernelArg = "gondolin.debug=1"

// SnapshotKernelArg is on the command line of VMs saved as a snapshot and
// of those resumed from one. Their agent does before it opens its channel
// what it would otherwise do during the first create (start the first
// container's init, build its codecs), so that the snapshot holds it done.
// A booted VM would only move that work before its first answer, and pay
// for the codecs of messages it never uses: measured ~3% slower to start.
const SnapshotKernelArg = "gondolin.snapshot=1"
