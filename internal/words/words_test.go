package words

import "testing"

func TestCount(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{Count(0, "prompt"), "0 prompts"},
		{Count(1, "prompt"), "1 prompt"},
		{Count(2, "prompt"), "2 prompts"},
		{CountAs(1, "message is", "messages are"), "1 message is"},
		{CountAs(3, "message is", "messages are"), "3 messages are"},
		{NoneOf(1, "response", "be read"), "the one response could not be read"},
		{NoneOf(2, "response", "be scored"), "none of the 2 responses could be scored"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
