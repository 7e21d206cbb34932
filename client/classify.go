package client

import (
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/internal/overload"
)

// Class is what a failed attempt says of the instance it went to. One
// classification serves ejection, the balancers and Retry alike:
// Ejection.Classify sets it, DefaultClassify is the default.
type Class int

const (
	// Answer: the instance answered, with an error of the application's
	// (NotFound, InvalidArgument, PermissionDenied...). It counts as a
	// success: no strike towards ejection, its latency as measured, and
	// the call ends with it.
	Answer Class = iota
	// InstanceFailure: the instance failed the call (Internal, Unknown,
	// DataLoss, Unavailable, a DeadlineExceeded it returned, a connection
	// broken under the call). It counts towards ejection, weighs in P2C's
	// cost as a slow answer, and Retry tries another instance: for a call
	// that is not idempotent, only when the attempt never left.
	InstanceFailure
	// Shed: the instance refused the call for overload before doing any
	// work (transport/grpcserver's admission marks such refusals). It
	// counts as cost, not failure: the balancers steer away until the
	// instance reports room, ejection ignores it, and Retry tries another
	// instance, idempotent call or not.
	Shed
)

var classNames = [...]string{Answer: "answer", InstanceFailure: "instance failure", Shed: "shed"}

func (c Class) String() string {
	if c < 0 || int(c) >= len(classNames) {
		return "Class(" + strconv.Itoa(int(c)) + ")"
	}
	return classNames[c]
}

// DefaultClassify is the classification unless Ejection.Classify says
// otherwise, by the error's gRPC code (an error without a gRPC status
// counts as Unknown, a context error as its code):
//
//	Shed             ResourceExhausted marked as shed for overload
//	InstanceFailure  Internal, Unknown, DataLoss, Unavailable,
//	                 DeadlineExceeded, Canceled
//	Answer           every other code: NotFound, InvalidArgument,
//	                 AlreadyExists, FailedPrecondition, PermissionDenied,
//	                 Unauthenticated, OutOfRange, Unimplemented, Aborted,
//	                 ResourceExhausted without the mark
//
// It is asked only about attempts that ended while the caller's context
// was live and the attempt had time left: a caller that gave up says
// nothing of the instance, and an attempt whose share of the call's time
// ran out is an instance failure whatever its error. So DeadlineExceeded
// and Canceled here are the instance's own (a deadline it ran into, a
// connection closed under the call).
func DefaultClassify(err error) Class {
	if overload.IsShed(err) {
		return Shed
	}
	switch code(err) {
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return InstanceFailure
	}
	return Answer
}

// code is err's gRPC code, the code of a context error, or Unknown.
func code(err error) codes.Code {
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return status.FromContextError(err).Code() // Unknown for any other error
}
