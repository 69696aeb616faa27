package api

// ProcessStartFailed starts the message of the FailedPrecondition error the
// agent returns when a container's process cannot be started (a missing
// binary, a bad working directory): the host recognises it by this prefix
// to report the failure in the words users know from runc.
const ProcessStartFailed = "unable to start container process"
