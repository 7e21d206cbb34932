package trim

import (
	"context"
	"errors"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/trimsvc"
)

// errorDomain names trimkit in the ErrorInfo details of its statuses.
const errorDomain = "trimkit"

// serviceErrors is the one table of the service's errors: the sentinel, the
// reason that names it in an ErrorInfo detail, and the code a server answers
// it with. Adding a service error is adding a row.
var serviceErrors = []struct {
	sentinel error
	reason   string
	code     codes.Code
}{
	{trimsvc.ErrInputTooLarge, "INPUT_TOO_LARGE", codes.InvalidArgument},
	{trimsvc.ErrInvalidUTF8, "INVALID_UTF8", codes.InvalidArgument},
}

// Code is the gRPC code a server answers err with: the one place that maps
// errors to codes.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	for _, se := range serviceErrors {
		if errors.Is(err, se.sentinel) {
			return se.code
		}
	}
	var st interface{ GRPCStatus() *status.Status }
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.As(err, &st):
		return st.GRPCStatus().Code()
	default:
		return codes.Internal
	}
}

// CodeName is Code as a label value, such as "OK" or "InvalidArgument", for
// trimsvc.InstrumentingMiddleware.
func CodeName(err error) string { return Code(err).String() }

// Status converts err into the gRPC status a server answers with. A service
// error also travels as an ErrorInfo detail so that FromStatus can restore it.
func Status(err error) *status.Status {
	if st, ok := status.FromError(err); ok {
		return st
	}
	st := status.New(Code(err), err.Error())
	for _, se := range serviceErrors {
		if !errors.Is(err, se.sentinel) {
			continue
		}
		info := &errdetails.ErrorInfo{Reason: se.reason, Domain: errorDomain}
		var limit *trimsvc.LimitError
		if errors.As(err, &limit) {
			info.Metadata = map[string]string{"size": strconv.Itoa(limit.Size), "limit": strconv.Itoa(limit.Limit)}
		}
		if withInfo, err := st.WithDetails(info); err == nil {
			return withInfo
		}
		return st
	}
	return st
}

// StatusError is an error a trim server answered with, on the client side.
// GRPCStatus returns the status as received, and Unwrap the service error it
// stands for (nil when it stands for none), so both status.FromError and
// errors.Is(err, trimsvc.ErrInputTooLarge) work.
type StatusError struct {
	status *status.Status
	err    error
}

func (e *StatusError) Error() string { return e.status.Err().Error() }

// GRPCStatus returns the status the server answered with.
func (e *StatusError) GRPCStatus() *status.Status { return e.status }

// Unwrap returns the service error the status stands for, or nil.
func (e *StatusError) Unwrap() error { return e.err }

// FromStatus turns an error from a gRPC call into a *StatusError that also
// unwraps to the service error named in the status' details. Errors that carry
// no gRPC status (such as a context error before the call) are returned as
// they are.
func FromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() == codes.OK {
		return err
	}
	return &StatusError{status: st, err: serviceError(st)}
}

// serviceError restores the service error a status names, or returns nil.
func serviceError(st *status.Status) error {
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != errorDomain {
			continue
		}
		for _, se := range serviceErrors {
			if info.GetReason() != se.reason {
				continue
			}
			if errors.Is(se.sentinel, trimsvc.ErrInputTooLarge) {
				size, errSize := strconv.Atoi(info.GetMetadata()["size"])
				limit, errLimit := strconv.Atoi(info.GetMetadata()["limit"])
				if errSize == nil && errLimit == nil {
					return &trimsvc.LimitError{Size: size, Limit: limit}
				}
			}
			return se.sentinel
		}
	}
	return nil
}
