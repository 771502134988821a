package commands

// globMatch matches s against a Redis glob pattern (*, ?, [set], [^set],
// [a-z], \ escapes), like Redis's stringmatchlen, in O(len(p)·len(s)): a
// failed match resumes after the last '*' only, so patterns with many stars
// cannot make KEYS or SCAN MATCH take exponential time.
func globMatch(p, s string, nocase bool) bool {
	px, sx := 0, 0
	starPx, starSx := -1, 0
	for px < len(p) || sx < len(s) {
		if px < len(p) {
			switch c := p[px]; c {
			case '*':
				starPx, starSx = px, sx
				px++
				continue
			case '?':
				if sx < len(s) {
					px++
					sx++
					continue
				}
			case '[':
				if sx < len(s) {
					if ok, n := matchClass(p[px:], s[sx], nocase); ok {
						px += n
						sx++
						continue
					}
				}
			case '\\':
				lit, n := c, 1
				if px+1 < len(p) {
					lit, n = p[px+1], 2
				}
				if sx < len(s) && eqByte(lit, s[sx], nocase) {
					px += n
					sx++
					continue
				}
			default:
				if sx < len(s) && eqByte(c, s[sx], nocase) {
					px++
					sx++
					continue
				}
			}
		}
		// mismatch: let the last star swallow one more byte, if it can
		if starPx >= 0 && starSx < len(s) {
			starSx++
			px, sx = starPx+1, starSx
			continue
		}
		return false
	}
	return true
}

func eqByte(a, b byte, nocase bool) bool { return a == b || (nocase && lower(a) == lower(b)) }

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 32
	}
	return c
}

// matchClass matches c against the class at the start of p ("[...]") and
// returns whether it matched and the class's length in p.
func matchClass(p string, c byte, nocase bool) (bool, int) {
	i := 1
	not := i < len(p) && p[i] == '^'
	if not {
		i++
	}
	match := false
	for i < len(p) && p[i] != ']' {
		switch {
		case p[i] == '\\' && i+1 < len(p):
			match = match || eqByte(p[i+1], c, nocase)
			i += 2
		case i+2 < len(p) && p[i+1] == '-' && p[i+2] != ']':
			lo, hi, x := p[i], p[i+2], c
			if lo > hi {
				lo, hi = hi, lo
			}
			if nocase {
				lo, hi, x = lower(lo), lower(hi), lower(x)
			}
			match = match || (x >= lo && x <= hi)
			i += 3
		default:
			match = match || eqByte(p[i], c, nocase)
			i++
		}
	}
	if i < len(p) {
		i++ // the closing ']'
	}
	if not {
		match = !match
	}
	return match, i
}
