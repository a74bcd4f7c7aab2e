// Command go_template renders an Ollama chat TEMPLATE with Go's own text/template, the way Ollama does.
//
// The tests (tests/test_modelfile.py) build it once per session and run it on the Modelfile's template.
// It reads one JSON object on stdin:
//
//	{"template": "...", "messages": [Ollama /api/chat messages], "tools": [Ollama tools]}
//
// and writes one JSON object on stdout:
//
//	{"prompt": "...", "tools_json": ["..."], "arguments_json": [["..."]], "tool_call_tag": "..."}
//
// prompt is the rendering; tools_json and arguments_json are what the template's `json` function writes
// for each tool and for each tool call's arguments (so a test can tell JSON formatting from template
// text); tool_call_tag is the tag Ollama's tool-call parser reads out of the template.
//
// What is mirrored from Ollama (its api and template packages), standard library only:
//   - the template is parsed with Option("missingkey=zero") and the functions json (encoding/json
//     Marshal, compact, HTML characters escaped), currentDate, yesterdayDate and toTypeScriptType;
//   - messages are collated: system messages are joined with "\n\n" into .System (and stay in
//     .Messages), consecutive messages of the same role except "tool" are merged with "\n\n";
//   - .Messages are {Role Content Thinking Images ToolCalls ToolName ToolCallID}, a tool call is
//     {ID Function{Index Name Arguments}}, Arguments a map[string]any (JSON keys sorted);
//   - .Tools are {Type Items Function{Name Description Parameters{Type $defs Items Required Properties}}}
//     with the JSON field names and omitempty rules of Ollama's types, Properties a map of
//     {anyOf type items description enum properties required};
//   - a template that uses .Messages gets {System Messages Tools Response Think ThinkLevel IsThinkSet}.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

// ---- Ollama's request types (api package): what /api/chat decodes ----

type message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	Thinking   string     `json:"thinking,omitempty"`
	Images     [][]byte   `json:"images,omitempty"`
	ToolCalls  []toolCall `json:"tool_calls,omitempty"`
	ToolName   string     `json:"tool_name,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

type toolCall struct {
	ID       string `json:"id,omitempty"`
	Function struct {
		Index     int            `json:"index"`
		Name      string         `json:"name"`
		Arguments map[string]any `json:"arguments"`
	} `json:"function"`
}

// propertyType is a JSON Schema "type": one string, or a list of them.
type propertyType []string

func (p *propertyType) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*p = propertyType{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*p = many
	return nil
}

func (p propertyType) MarshalJSON() ([]byte, error) {
	if len(p) == 1 {
		return json.Marshal(p[0])
	}
	return json.Marshal([]string(p))
}

type toolProperty struct {
	AnyOf       []toolProperty          `json:"anyOf,omitempty"`
	Type        propertyType            `json:"type,omitempty"`
	Items       any                     `json:"items,omitempty"`
	Description string                  `json:"description,omitempty"`
	Enum        []any                   `json:"enum,omitempty"`
	Properties  map[string]toolProperty `json:"properties,omitempty"`
	Required    []string                `json:"required,omitempty"`
}

type tool struct {
	Type     string `json:"type"`
	Items    any    `json:"items,omitempty"`
	Function struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		Parameters  struct {
			Type       string                  `json:"type"`
			Defs       any                     `json:"$defs,omitempty"`
			Items      any                     `json:"items,omitempty"`
			Required   []string                `json:"required,omitempty"`
			Properties map[string]toolProperty `json:"properties"`
		} `json:"parameters"`
	} `json:"function"`
}

// ---- what the template sees ----

type templateToolCall struct {
	ID       string
	Function struct {
		Index     int
		Name      string
		Arguments map[string]any
	}
}

type templateMessage struct {
	Role       string
	Content    string
	Thinking   string
	Images     [][]byte
	ToolCalls  []templateToolCall
	ToolName   string
	ToolCallID string
}

func marshal(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func typeScript(p toolProperty) string {
	if len(p.AnyOf) > 0 {
		var parts []string
		for _, a := range p.AnyOf {
			parts = append(parts, typeScript(a))
		}
		return strings.Join(parts, " | ")
	}
	if len(p.Type) == 0 {
		return "any"
	}
	names := map[string]string{"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
		"array": "any[]", "object": "Record<string, any>", "null": "null"}
	var parts []string
	for _, t := range p.Type {
		if n, ok := names[t]; ok {
			parts = append(parts, n)
		} else {
			parts = append(parts, "any")
		}
	}
	return strings.Join(parts, " | ")
}

var funcs = template.FuncMap{
	"json":          marshal,
	"currentDate":   func(...string) string { return time.Now().Format("2006-01-02") },
	"yesterdayDate": func(...string) string { return time.Now().AddDate(0, 0, -1).Format("2006-01-02") },
	"toTypeScriptType": func(v any) string {
		switch p := v.(type) {
		case toolProperty:
			return typeScript(p)
		case *toolProperty:
			if p != nil {
				return typeScript(*p)
			}
		}
		return "any"
	},
}

// collate joins the system messages and merges runs of one role (tool results excepted).
func collate(msgs []message) (string, []*message) {
	var system []string
	var out []*message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if n := len(out); n > 0 && out[n-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			out[n-1].Content += "\n\n" + msgs[i].Content
		} else {
			out = append(out, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), out
}

// ---- the tool-call tag: first non-blank text inside the first `if` that tests a .ToolCalls field ----

func testsToolCalls(n *parse.IfNode) bool {
	for _, cmd := range n.Pipe.Cmds {
		for _, arg := range cmd.Args {
			if f, ok := arg.(*parse.FieldNode); ok {
				for _, id := range f.Ident {
					if id == "ToolCalls" {
						return true
					}
				}
			}
		}
	}
	return false
}

func lists(n parse.Node) []*parse.ListNode {
	switch n := n.(type) {
	case *parse.ListNode:
		return []*parse.ListNode{n}
	case *parse.IfNode:
		return []*parse.ListNode{n.List, n.ElseList}
	case *parse.RangeNode:
		return []*parse.ListNode{n.List, n.ElseList}
	case *parse.WithNode:
		return []*parse.ListNode{n.List, n.ElseList}
	}
	return nil
}

func findToolCallsIf(nodes []parse.Node) *parse.IfNode {
	for _, n := range nodes {
		if i, ok := n.(*parse.IfNode); ok && testsToolCalls(i) {
			return i
		}
		for _, l := range lists(n) {
			if l != nil {
				if found := findToolCallsIf(l.Nodes); found != nil {
					return found
				}
			}
		}
	}
	return nil
}

// firstText searches depth first; inside an if/range/with it stops at the end of that block.
func firstText(nodes []parse.Node) *parse.TextNode {
	for _, n := range nodes {
		if t, ok := n.(*parse.TextNode); ok {
			if len(bytes.TrimSpace(t.Text)) > 0 {
				return t
			}
			continue
		}
		ls := lists(n)
		for _, l := range ls {
			if l != nil {
				if t := firstText(l.Nodes); t != nil {
					return t
				}
			}
		}
		if _, isList := n.(*parse.ListNode); len(ls) > 0 && !isList {
			return nil
		}
	}
	return nil
}

func toolCallTag(t *template.Template) string {
	found := findToolCallsIf(t.Tree.Root.Nodes)
	if found == nil {
		return "{"
	}
	text := firstText(found.List.Nodes)
	if text == nil {
		return "{"
	}
	tag, _, _ := strings.Cut(strings.ReplaceAll(string(text.Text), "\r\n", "\n"), "{")
	if tag = strings.TrimSpace(tag); tag == "" {
		return "{"
	}
	return tag
}

func run() error {
	var in struct {
		Template string    `json:"template"`
		Messages []message `json:"messages"`
		Tools    []tool    `json:"tools"`
	}
	dec := json.NewDecoder(os.Stdin)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return fmt.Errorf("reading the request: %w", err)
	}
	for i := range in.Messages {
		in.Messages[i].Role = strings.ToLower(in.Messages[i].Role)
	}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(in.Template)
	if err != nil {
		return err
	}
	system, collated := collate(in.Messages)
	messages := make([]*templateMessage, len(collated))
	var argsJSON [][]string
	for i, m := range collated {
		tm := &templateMessage{Role: m.Role, Content: m.Content, Thinking: m.Thinking, Images: m.Images,
			ToolName: m.ToolName, ToolCallID: m.ToolCallID}
		var args []string
		for _, c := range m.ToolCalls {
			var tc templateToolCall
			tc.ID, tc.Function.Index, tc.Function.Name = c.ID, c.Function.Index, c.Function.Name
			tc.Function.Arguments = c.Function.Arguments
			tm.ToolCalls = append(tm.ToolCalls, tc)
			args = append(args, marshal(tc.Function.Arguments))
		}
		argsJSON = append(argsJSON, args)
		messages[i] = tm
	}
	toolsJSON := []string{}
	for _, t := range in.Tools {
		toolsJSON = append(toolsJSON, marshal(t))
	}
	var out bytes.Buffer
	err = tmpl.Execute(&out, map[string]any{
		"System": system, "Messages": messages, "Tools": in.Tools, "Response": "",
		"Think": false, "ThinkLevel": "", "IsThinkSet": false,
	})
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(map[string]any{"prompt": out.String(), "tools_json": toolsJSON, "arguments_json": argsJSON,
		"tool_call_tag": toolCallTag(tmpl)})
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "go_template:", err)
		os.Exit(1)
	}
}
