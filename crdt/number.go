package crdt

import (
	"math/big"
	"strconv"
	"strings"
)

// ParseInt parses b as Redis does (string2ll): optional '-', no '+', no
// leading zeros, no spaces, fits in int64.
func ParseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	if len(b) == 1 && b[0] == '0' {
		return 0, true
	}
	i := 0
	if b[0] == '-' {
		i = 1
		if len(b) == 1 {
			return 0, false
		}
	}
	if b[i] < '1' || b[i] > '9' {
		return 0, false
	}
	for _, c := range b[i:] {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	return v, err == nil
}

// ParseFloat parses b as an exact rational the way Redis's strtold accepts
// a float argument (decimal digits, optional sign, point and exponent; no
// spaces, no hex, no nan/inf). ok is false otherwise.
func ParseFloat(b []byte) (*big.Rat, bool) {
	if len(b) == 0 || len(b) > 5000 {
		return nil, false
	}
	digits := false
	for i, c := range b {
		switch {
		case c >= '0' && c <= '9':
			digits = true
		case c == '.' || c == 'e' || c == 'E':
		case (c == '-' || c == '+') && (i == 0 || b[i-1] == 'e' || b[i-1] == 'E'):
		default:
			return nil, false
		}
	}
	if !digits {
		return nil, false
	}
	// Exponents beyond what a long double holds are refused, like Redis.
	if e := strings.IndexAny(string(b), "eE"); e >= 0 {
		exp, err := strconv.Atoi(string(b[e+1:]))
		if err != nil || exp > 4932 || exp < -4950 {
			return nil, false
		}
	}
	r, ok := new(big.Rat).SetString(string(b))
	return r, ok
}

// FormatRat renders r the way Redis renders an INCRBYFLOAT result: rounded
// to a 64-bit mantissa (x87 long double), 17 decimals, trailing zeros and a
// trailing point removed.
func FormatRat(r *big.Rat) string {
	if r.IsInt() && r.Num().IsInt64() {
		return r.Num().String()
	}
	f := new(big.Float).SetPrec(64).SetMode(big.ToNearestEven).SetRat(r)
	s := f.Text('f', 17)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(s, "0")
		s = strings.TrimSuffix(s, ".")
	}
	if s == "-0" {
		s = "0"
	}
	return s
}

// ratString encodes r canonically for storage ("" for zero).
func ratString(r *big.Rat) string {
	if r == nil || r.Sign() == 0 {
		return ""
	}
	return r.String()
}

func parseRatString(s string) *big.Rat {
	r := new(big.Rat)
	if s != "" {
		r.SetString(s)
	}
	return r
}

// ratParser validates stored rational strings ("a/b" or "a").
type ratParser struct{}

func (ratParser) parse(s string) (*big.Rat, bool) {
	if len(s) > 20000 {
		return nil, false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9') && c != '-' && c != '/' {
			return nil, false
		}
	}
	r, ok := new(big.Rat).SetString(s)
	return r, ok
}
