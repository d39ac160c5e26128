package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"
)

// demoResponse is one bundled response. Training reads Line as is; the replay
// re-emits it under a new id, event time, domain and attributes.
type demoResponse struct {
	ID, Model, Domain string
	Correct           bool
	Line              []byte
	rest              []byte // the object's other members, without braces; "" when none
}

// demoPool holds the bundled responses, split by prompt into a training part
// and a replay part (never the same prompt in both).
type demoPool struct {
	Train   []*demoResponse
	Replay  map[string][]*demoResponse // by domain
	Domains []string                   // sorted
	Models  []string                   // sorted
}

// loadDemoPool reads JSON Lines of labelled responses (fields id, model,
// domain, correct required) and puts the first trainFrac of every model x
// domain, in file order, into the training part.
func loadDemoPool(r io.Reader, trainFrac float64) (*demoPool, error) {
	if trainFrac <= 0 || trainFrac >= 1 {
		return nil, fmt.Errorf("training fraction %g: want 0 < f < 1", trainFrac)
	}
	type head struct {
		ID      string `json:"id"`
		Model   string `json:"model"`
		Domain  string `json:"domain"`
		Correct *bool  `json:"correct"`
	}
	bySlice := map[[2]string][]*demoResponse{}
	var order [][2]string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var h head
		if err := json.Unmarshal(b, &h); err != nil {
			return nil, fmt.Errorf("line %d: not a JSON response: %w", line, err)
		}
		switch {
		case h.ID == "":
			return nil, fmt.Errorf("line %d: no \"id\"", line)
		case h.Model == "":
			return nil, fmt.Errorf("line %d (%s): no \"model\"", line, h.ID)
		case h.Domain == "":
			return nil, fmt.Errorf("line %d (%s): no \"domain\"; the demo needs labelled responses with domains", line, h.ID)
		case h.Correct == nil:
			return nil, fmt.Errorf("line %d (%s): no \"correct\"; the demo compares estimates with the truth and needs it", line, h.ID)
		}
		rest, err := restMembers(b)
		if err != nil {
			return nil, fmt.Errorf("line %d (%s): %w", line, h.ID, err)
		}
		resp := &demoResponse{ID: h.ID, Model: h.Model, Domain: h.Domain, Correct: *h.Correct, Line: bytes.Clone(b), rest: rest}
		k := [2]string{h.Model, h.Domain}
		if _, ok := bySlice[k]; !ok {
			order = append(order, k)
		}
		bySlice[k] = append(bySlice[k], resp)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading line %d: %w", line+1, err)
	}
	if len(order) == 0 {
		return nil, errors.New("no responses")
	}
	p := &demoPool{Replay: map[string][]*demoResponse{}}
	models := map[string]bool{}
	for _, k := range order {
		rs := bySlice[k]
		nt := int(math.Round(trainFrac * float64(len(rs))))
		if nt < 1 || nt >= len(rs) {
			return nil, fmt.Errorf("model %s, domain %s: %d responses cannot be split into training and replay; give at least 2 per model and domain", k[0], k[1], len(rs))
		}
		p.Train = append(p.Train, rs[:nt]...)
		if _, ok := p.Replay[k[1]]; !ok {
			p.Domains = append(p.Domains, k[1])
		}
		p.Replay[k[1]] = append(p.Replay[k[1]], rs[nt:]...)
		if !models[k[0]] {
			models[k[0]] = true
			p.Models = append(p.Models, k[0])
		}
	}
	sort.Strings(p.Domains)
	sort.Strings(p.Models)
	return p, nil
}

// restMembers returns the members of the JSON object b other than those the
// replay rewrites (id, created, domain, attributes) or withholds (correct:
// production traffic carries no labels; the demo keeps the truth aside),
// compacted, without the braces.
func restMembers(b []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	for _, k := range []string{"id", "created", "domain", "attributes", "correct"} {
		delete(m, k)
	}
	if len(m) == 0 {
		return nil, nil
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return out[1 : len(out)-1], nil
}

// scenario is the simulated day the demo replays.
type scenario struct {
	Start   time.Time     // event time of the day's first instant
	Day     time.Duration // simulated length
	Events  int           // responses over the day
	Degrade string        // the domain that degrades
	Into    string        // whose responses it receives once degraded
	At      time.Duration // offset of the degradation from Start
	Surge   float64       // the Degrade domain's traffic after At, in multiples of before; the extra comes from Into
	Tenants []string      // attribute values of "tenant", drawn uniformly
	Seed    uint64
}

func (s scenario) validate(p *demoPool) error {
	has := func(d string) bool { _, ok := p.Replay[d]; return ok }
	switch {
	case s.Day <= 0:
		return fmt.Errorf("simulated day %v: want > 0", s.Day)
	case s.Events < 1:
		return badFlag("--events %d: want >= 1", s.Events)
	case !has(s.Degrade):
		return badFlag("--degrade %q: not a domain of the data (have %v)", s.Degrade, p.Domains)
	case !has(s.Into):
		return badFlag("--into %q: not a domain of the data (have %v)", s.Into, p.Domains)
	case s.Into == s.Degrade:
		return badFlag("--into %q is the degrading domain itself; name a harder domain", s.Into)
	case s.At < 0 || s.At >= s.Day:
		return badFlag("--degrade-at %v: want within the simulated day [0, %v)", s.At, s.Day)
	case !(s.Surge > 1) || s.Surge > 100:
		return badFlag("--surge %g: want 1 < surge <= 100", s.Surge)
	}
	return nil
}

// demoEvent is one response of the replayed day.
type demoEvent struct {
	At       time.Time
	Domain   string // the slice the caller reports
	Tenant   string
	Src      *demoResponse
	Degraded bool // served from the Into domain
}

// newTenant is the tenant whose traffic degrades the Degrade domain.
const newTenant = "newco"

// events lays out the day: Events responses evenly spaced with jitter, each
// of a drawn domain and a response drawn with replacement from that domain's
// replay part. Domains are equally likely until At; from then on the Degrade
// domain is Surge times as likely, the extra being a new tenant's prompts of
// the Into domain reported under the Degrade domain's name.
func (s scenario) events(p *demoPool) []demoEvent {
	rng := rand.New(rand.NewPCG(s.Seed, 0x5eed))
	evs := make([]demoEvent, s.Events)
	step := float64(s.Day) / float64(s.Events)
	for i := range evs {
		at := s.Start.Add(time.Duration((float64(i) + rng.Float64()) * step)).Truncate(time.Millisecond)
		after := at.Sub(s.Start) >= s.At
		var d string
		if after {
			x := rng.Float64() * (float64(len(p.Domains)-1) + s.Surge)
			d = s.Degrade
			for _, o := range p.Domains {
				if o == s.Degrade {
					continue
				}
				if x < 1 {
					d = o
					break
				}
				x--
			}
		} else {
			d = p.Domains[rng.IntN(len(p.Domains))]
		}
		from := d
		degraded := false
		if d == s.Degrade && after && rng.Float64() < (s.Surge-1)/s.Surge {
			from, degraded = s.Into, true
		}
		pool := p.Replay[from]
		ev := demoEvent{At: at, Domain: d, Src: pool[rng.IntN(len(pool))], Degraded: degraded}
		switch {
		case degraded:
			ev.Tenant = newTenant
		case len(s.Tenants) > 0:
			ev.Tenant = s.Tenants[rng.IntN(len(s.Tenants))]
		}
		evs[i] = ev
	}
	return evs
}

// traceID is the id of the seq-th replayed response.
func (e demoEvent) traceID(seq int) string { return "demo-" + strconv.Itoa(seq) + "-" + e.Src.ID }

// appendJSON appends the event as one JSON line: the source response under a
// new id (unique per event, so every replayed response is its own trace), the
// event time as "created" and the reported domain, without its label.
func (e demoEvent) appendJSON(buf []byte, seq int) []byte {
	buf = append(buf, `{"id":`...)
	buf = strconv.AppendQuote(buf, e.traceID(seq))
	ms := e.At.UnixMilli()
	buf = append(buf, `,"created":`...)
	buf = strconv.AppendInt(buf, ms/1000, 10)
	buf = append(buf, '.')
	frac := ms % 1000
	buf = append(buf, byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
	buf = append(buf, `,"domain":`...)
	buf = strconv.AppendQuote(buf, e.Domain)
	if e.Tenant != "" {
		buf = append(buf, `,"attributes":{"tenant":`...)
		buf = strconv.AppendQuote(buf, e.Tenant)
		buf = append(buf, '}')
	}
	if len(e.Src.rest) > 0 {
		buf = append(buf, ',')
		buf = append(buf, e.Src.rest...)
	}
	return append(buf, '}', '\n')
}
