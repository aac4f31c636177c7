"""Go's text/template as docker's --format uses it (dockyard.cli.gotemplate).

DOCKER_VECTORS were recorded from the docker CLI 28.2.2 (Go 1.24), running
`docker context ls --format TEMPLATE` against a configuration with only the default
context, so that every expected output and error is what docker printed, not what we
believe Go does. test_against_docker_cli replays some of them through the docker CLI
when it is installed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dockyard.cli.gotemplate import (NO_VALUE, GoStruct, Template, TemplateError, TypedMap,
                                     format_value, go_json)

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"

# The row `docker context ls` hands its template for the default context.
CONTEXT = GoStruct("*formatter.clientContextContext", {
    "Current": True,
    "Description": "Current DOCKER_HOST based configuration",
    "DockerEndpoint": "unix:///var/run/docker.sock",
    "Error": "",
    "Name": "default",
})

# (template, expected output or None, expected error or None)
DOCKER_VECTORS = [
    ('{{.Name}}', 'default', None),
    ('{{.Name.Foo}}', None, 'template: :1:7: executing "" at <.Name.Foo>: can\'t evaluate field Foo in type string'),
    ('{{.Nope}}', None, 'template: :1:2: executing "" at <.Nope>: can\'t evaluate field Nope in type *formatter.clientContextContext'),
    ('{{.Current}}', 'true', None),
    ('{{if .Current}}yes{{else}}no{{end}}', 'yes', None),
    ('{{printf "%d %s %v %x %X %o %b %c %q %U" 65 65 65 255 255 8 5 65 65 65}}', "65 %!s(int=65) 65 ff FF 10 101 A 'A' U+0041", None),
    ('{{printf "%#x %#o %+d % d %05d %-5d| %.3d" 255 8 5 5 -42 7 7}}', '0xff 010 +5  5 -0042 7    | 007', None),
    ('{{printf "%s" 1.5}}', '%!s(float64=1.5)', None),
    ('{{printf "%v %v %v %v %v" 1e6 123456.0 1234567.0 0.0001 0.00001}}', '1e+06 123456 1.234567e+06 0.0001 1e-05', None),
    ('{{printf "%g %e %f %.3g %G %E" 1e21 1e21 2.5 1234.5678 1e-7 12.0}}', '1e+21 1.000000e+21 2.500000 1.23e+03 1E-07 1.200000E+01', None),
    ('{{printf "%d"}}', '%!d(MISSING)', None),
    ('{{printf "%d %d" 1}}', '1 %!d(MISSING)', None),
    ('{{printf "%d" 1 2 "x"}}', '1%!(EXTRA int=2, string=x)', None),
    ('{{printf "%!"}}', '%!!(MISSING)', None),
    ('{{printf "%"}}', '%!(NOVERB)', None),
    ('{{printf "%t %t %v" true false nil}}', 'true false <nil>', None),
    ('{{printf "%s %d" nil nil}}', '%!s(<nil>) %!d(<nil>)', None),
    ('{{printf "%*d|%-*d|" 5 1 5 2}}', '    1|2    |', None),
    ('{{printf "%.2s|%10.3s|%-10s|" "hello" "world" "x"}}', 'he|       wor|x         |', None),
    ('{{printf "%x % x %X %#x" "hi" "hi" "hi" "hi"}}', '6869 68 69 6869 0x6869', None),
    ('{{printf "%T %T %T %T %T" 1 1.5 "s" true (split "a" ",")}}', 'int float64 string bool []string', None),
    ('{{print 1 2 "a" "b" 3 true nil}}', '1 2ab3 true <nil>', None),
    ('{{println 1 2 "a"}}', '1 2 a\n', None),
    ('{{len "héllo"}} {{len (split "a,b,c" ",")}}', '6 3', None),
    ('{{index "abc" 1}}', '98', None),
    ('{{index (split "a,b,c" ",") 5}}', None, 'template: :1:2: executing "" at <index (split "a,b,c" ",") 5>: error calling index: index out of range: 5'),
    ('{{index (split "a,b,c" ",") -1}}', None, 'template: :1:2: executing "" at <index (split "a,b,c" ",") -1>: error calling index: index out of range: -1'),
    ('{{index 3 1}}', None, 'template: :1:2: executing "" at <index 3 1>: error calling index: can\'t index item of type int'),
    ('{{index nil 1}}', None, 'template: :1:2: executing "" at <index nil 1>: error calling index: index of untyped nil'),
    ('{{slice "abcdef" 1 3}} {{slice (split "a,b,c" ",") 1}}', 'bc [b c]', None),
    ('{{slice "abc" 2 1}}', None, 'template: :1:2: executing "" at <slice "abc" 2 1>: error calling slice: invalid slice index: 2 > 1'),
    ('{{eq 1 1}} {{eq 1 2 3 1}} {{ne "a" "b"}} {{lt 1 2}} {{le 2 2}} {{gt "b" "a"}} {{ge 1.5 2.5}}', 'true true true true true true false', None),
    ('{{eq 1 "a"}}', None, 'template: :1:2: executing "" at <eq 1 "a">: error calling eq: incompatible types for comparison'),
    ('{{lt true false}}', None, 'template: :1:2: executing "" at <lt true false>: error calling lt: invalid type for comparison'),
    ('{{eq 1}}', None, 'template: :1:2: executing "" at <eq 1>: error calling eq: missing argument for comparison'),
    ('{{lt 1 1.5}}', None, 'template: :1:2: executing "" at <lt 1 1.5>: error calling lt: incompatible types for comparison'),
    ('{{and 1 0 2}} {{and 1 2}} {{or 0 "" "x"}} {{or 0 ""}} {{not 0}} {{not "a"}}', '0 2 x  true false', None),
    ('{{and}}', None, 'template: :1:2: executing "" at <and>: wrong number of args for and: want at least 1 got 0'),
    ('{{json "<a>&é\\u2028"}} {{json 1.5}} {{json 1e21}} {{json 1e-7}} {{json 100000000000000000000.0}} {{json nil}} {{json true}}', '"<a>&é\\u2028" 1.5 1e+21 1e-7 100000000000000000000 null true', None),
    ('{{json (split "a,b" ",")}}', '["a","b"]', None),
    ('{{json .}}', '{"Current":true,"Description":"Current DOCKER_HOST based configuration","DockerEndpoint":"unix:///var/run/docker.sock","Error":"","Name":"default"}', None),
    ('{{join (split "a,b,c" ",") "-"}}', 'a-b-c', None),
    ('{{join "abc" ","}}', None, 'template: :1:7: executing "" at <"abc">: can\'t handle "abc" for arg of type []string'),
    ('{{title "hello wORLD foo-bar_baz x.y"}} {{upper "abc"}} {{lower "ÀBC"}}', 'Hello WORLD Foo-Bar_baz X.Y ABC àbc', None),
    ('{{pad "x" 2 3}}| {{pad "" 2 3}}|', '  x   | |', None),
    ('{{truncate "abcdef" 3}} {{truncate "ab" 3}} {{truncate "abc" 3}}', 'abc ab abc', None),
    ('{{truncate "abc" 1.0}}', 'a', None),
    ('{{truncate "abc" 1.5}}', None, 'template: :1:17: executing "" at <1.5>: expected integer; found 1.5'),
    ('{{truncate "abc" "x"}}', None, 'template: :1:17: executing "" at <"x">: expected integer; found "x"'),
    ('{{upper 1}}', None, 'template: :1:8: executing "" at <1>: expected string; found 1'),
    ('{{upper .Nope}}', None, 'template: :1:8: executing "" at <.Nope>: can\'t evaluate field Nope in type *formatter.clientContextContext'),
    ('{{$x := 1}}{{$x}}{{$x = 2}}{{$x}}', '12', None),
    ('{{$x := .Name}}{{with .Description}}{{$x}}/{{.}}{{end}}', 'default/Current DOCKER_HOST based configuration', None),
    ('{{with .Error}}x{{else}}empty{{end}}', 'empty', None),
    ('{{with $x := .Name}}{{$x}}{{end}}', 'default', None),
    ('{{range $i, $c := split "a,b,c" ","}}{{$i}}{{$c}}{{end}}', '0a1b2c', None),
    ('{{range split "a,b,c" ","}}{{if eq . "b"}}{{continue}}{{end}}{{.}}{{end}}', 'ac', None),
    ('{{range split "a,b,c" ","}}{{if eq . "b"}}{{break}}{{end}}{{.}}{{end}}', 'a', None),
    ('{{range split "" "x"}}{{.}}{{else}}none{{end}}', '', None),
    ('{{range 3}}{{.}}{{end}}', '012', None),
    ('{{range .Name}}{{end}}', None, 'template: :1:8: executing "" at <.Name>: range can\'t iterate over default'),
    ('{{range $x := split "a,b" ","}}{{$x}}{{end}}{{$x}}', None, 'template: :1: undefined variable "$x"'),
    ('{{foo}}', None, 'template: :1: function "foo" not defined'),
    ('{{}}', None, 'template: :1: missing value for command'),
    ('{{ } }}', None, 'template: :1: unexpected "}" in command'),
    ('{{if}}', None, 'template: :1: missing value for if'),
    ('{{end}}', None, 'template: :1: unexpected {{end}}'),
    ('{{else}}', None, 'template: :1: unexpected {{else}}'),
    ('{{if 1}}', None, 'template: :1: unexpected EOF'),
    ('{{range .Name}}{{else}}{{break}}{{end}}', None, 'template: :1: {{break}} outside {{range}}'),
    ('{{break}}', None, 'template: :1: {{break}} outside {{range}}'),
    ('{{.Name | printf "%s!"}}', 'default!', None),
    ('{{.Name | "x"}}', None, 'template: :1: non executable command in pipeline stage 2'),
    ('{{"a" | printf "%s-%s" "b"}}', 'b-a', None),
    ('{{nil}}', None, 'template: :1:2: executing "" at <nil>: nil is not a command'),
    ('{{1 2}}', None, 'template: :1:2: executing "" at <1>: can\'t give argument to non-function 1'),
    ('{{(.Name)}}', 'default', None),
    ('{{(split "a.b" ".").Foo}}', None, 'template: :1:15: executing "" at <".">: can\'t evaluate field Foo in type []string'),
    ('{{"x".Foo}}', None, 'template: :1: unexpected . after term "\\"x\\""'),
    ('{{.Name | len | printf "%03d"}}', '007', None),
    ('{{/* c */}}x{{- /* c2 */ -}} y', 'xy', None),
    ('{{/* c }}', None, 'template: :1: unclosed comment'),
    ('{{/* c */ x}}', None, 'template: :1: comment ends before closing delimiter'),
    ('{{"unterminated}}', None, 'template: :1: unterminated quoted string'),
    ('{{`raw', None, 'template: :1: unterminated raw quoted string'),
    ("{{'\\\n'}}", None, 'template: :1: unterminated character constant'),
    ('string`}}', 'string`}}', None),
    ('{{3a}}', None, 'template: :1: bad number syntax: "3a"'),
    ('{{1e3x}}', None, 'template: :1: bad number syntax: "1e3x"'),
    ('{{"\\q"}}', None, 'template: :1: invalid syntax'),
    ('{{"\\u00e9\\x41\\101"}}', 'éAA', None),
    ('{{.Name@}}', None, "template: :1: bad character U+0040 '@'"),
    ('{{@}}', None, 'template: :1: unexpected "@" in command'),
    ('{{$.Name}}', 'default', None),
    ('{{$y}}', None, 'template: :1: undefined variable "$y"'),
    ('{{.Name.}}', None, 'template: :1: unexpected <.> in operand'),
    ('{{( .Name }}', None, 'template: :1: unclosed left paren'),
    ('{{ .Name ) }}', None, 'template: :1: unexpected right paren'),
    ('{{.Name -}}  after', 'defaultafter', None),
    ('   {{- .Name}}', 'default', None),
    ('{{-3}}', '-3', None),
    ('{{.Name}}{{template "x"}}', None, 'template: :1:20: executing "" at <{{template "x"}}>: template "x" not defined'),
    ('{{ .Name|printf "%s"|len }}', '7', None),
    ('{{index .Name}}', 'default', None),
    ('{{html "<a href=\'x\'>&\\"</a>"}} {{urlquery "a b&c=d/é"}} {{js "a\'b\\"c<d>"}}', '&lt;a href=&#39;x&#39;&gt;&amp;&#34;&lt;/a&gt; a+b%26c%3Dd%2F%C3%A9 a\\\'b\\"c\\u003Cd\\u003E', None),
    ('{{printf "%5t|%-7v|%3c" true false 65}}', ' true|false  |  A', None),
    ('{{printf "%08.3f|%-8.2f|%+.1e|% .2f" 3.14159 2.5 12345.678 1.0}}', '0003.142|2.50    |+1.2e+04| 1.00', None),
    ('{{printf "%x %X" 3.5 -255}}', '0x1.cp+01 -FF', None),
    ('{{printf "%6.2f%%" 99.5}}', ' 99.50%', None),
    ('{{printf "%[2]d %[1]d" 1 2}}', '2 1', None),
    ('{{if and .Current (eq .Name "default")}}ok{{end}}', 'ok', None),
    ('{{if not .Error}}no error{{end}}', 'no error', None),
    ('{{len .Nope}}', None, 'template: :1:6: executing "" at <.Nope>: can\'t evaluate field Nope in type *formatter.clientContextContext'),
    ('{{.Name|printf "%s" 1}}', '%!s(int=1)%!(EXTRA string=default)', None),
    ('{{println}}', '\n', None),
    ('{{print}}', '', None),
    ('{{slice}}', None, 'template: :1:2: executing "" at <slice>: wrong number of args for slice: want at least 1 got 0'),
    ('{{index "abc" "x"}}', None, 'template: :1:2: executing "" at <index "abc" "x">: error calling index: cannot index slice/array with type string'),
    ('{{true.Foo}}', None, 'template: :1: unexpected . after term "true"'),
    ('{{range $a, $b, $c := split "a" ","}}{{end}}', None, 'template: :1: too many declarations in range'),
    ('{{$a, $b := 1}}', None, 'template: :1: too many declarations in command'),
    ('{{range $a := 1, 2}}{{end}}', None, 'template: :1: unexpected "," in operand'),
    ('{{if 1}}a{{else if 0}}b{{else}}c{{end}}', 'a', None),
    ('{{if 0}}a{{else if 0}}b{{else}}c{{end}}', 'c', None),
    ('{{if 1}}a{{else}}b{{else}}c{{end}}', None, 'template: :1: expected end; found {{else}}'),
    ('{{if 1}}a{{end}}{{end}}', None, 'template: :1: unexpected {{end}}'),
    ('{{with 0}}a{{else with 1}}b{{.}}{{end}}', 'b1', None),
    ('a  {{- .Name -}}  b', 'adefaultb', None),
    ('a {{- .Name}} b {{.Name -}} c', 'adefault b defaultc', None),
    ('{{ .Name }}', 'default', None),
    ('{{-.Name}}', None, 'template: :1: bad number syntax: "-.N"'),
    ('{{.Name-}}', None, "template: :1: bad character U+002D '-'"),
    ('{{- /* x */ -}}', '', None),
    ('{{range $i, $e := split "a,b" ","}}{{$i}}:{{$e}} {{end}}{{$.Name}}', '0:a 1:b default', None),
    ('{{range split "a,b" ","}}{{$.Name}}{{.}}{{end}}', 'defaultadefaultb', None),
    ('{{$x := 0}}{{range split "a,b" ","}}{{$x = .}}{{end}}{{$x}}', 'b', None),
    ('{{$x := 0}}{{range $x = split "a,b" ","}}{{end}}{{$x}}', 'b', None),
    ('{{$x := 0}}{{range $i, $x = split "a,b" ","}}{{end}}{{$x}}', None, 'template: :1:40: executing "" at <",">: undefined variable: $i'),
    ('{{if true}}{{$x := 1}}{{end}}{{$x}}', None, 'template: :1: undefined variable "$x"'),
    ('{{with $x := "v"}}{{$x}}{{else}}{{end}}', 'v', None),
    ('{{with .Nope}}{{else with .Name}}[{{.}}]{{end}}', None, 'template: :1:7: executing "" at <.Nope>: can\'t evaluate field Nope in type *formatter.clientContextContext'),
    ('{{with 0}}{{else with 0}}{{else}}z{{end}}', 'z', None),
    ('{{range $k, $v := 5}}{{end}}', None, 'template: :1:18: executing "" at <5>: can\'t use 5 to iterate over more than one variable'),
    ('{{range $v := 3}}{{$v}}{{end}}', '012', None),
    ('{{range $i, $e := "str"}}{{end}}', None, 'template: :1:18: executing "" at <"str">: range can\'t iterate over str'),
    ('{{if eq .Name "default" "other"}}m{{end}}', 'm', None),
    ('{{len .Name | printf "%d"}}', '7', None),
    ('{{.Name | printf "%s" | printf "%q"}}', '"default"', None),
    ('{{printf "%s" .Name | len}}', '7', None),
    ('{{(len .Name) | printf "%d"}}', '7', None),
    ('{{((.Name))}}', 'default', None),
    ('{{(printf "%s" .Name).Foo}}', None, 'template: :1:15: executing "" at <.Name>: can\'t evaluate field Foo in type string'),
    ('{{index (split "a,b" ",") 1 0}}', '98', None),
    ('{{slice "abc" 1 2 3}}', None, 'template: :1:2: executing "" at <slice "abc" 1 2 3>: error calling slice: cannot 3-index slice a string'),
    ('{{slice (split "a,b,c" ",") 0 1 2}}', '[a]', None),
    ('{{slice "abc" 4}}', None, 'template: :1:2: executing "" at <slice "abc" 4>: error calling slice: index out of range: 4'),
    ('{{len 3}}', None, 'template: :1:2: executing "" at <len 3>: error calling len: len of type int'),
    ('{{not}}', None, 'template: :1:2: executing "" at <not>: wrong number of args for not: want 1 got 0'),
    ('{{not 1 2}}', None, 'template: :1:2: executing "" at <not>: wrong number of args for not: want 1 got 2'),
    ('{{html}}', '', None),
    ('{{printf 1}}', None, 'template: :1:9: executing "" at <1>: expected string; found 1'),
    ('{{json}}', None, 'template: :1:2: executing "" at <json>: wrong number of args for json: want 1 got 0'),
    ('{{json 1 2}}', None, 'template: :1:2: executing "" at <json>: wrong number of args for json: want 1 got 2'),
    ('{{split "a"}}', None, 'template: :1:2: executing "" at <split>: wrong number of args for split: want 2 got 1'),
    ('{{and 0 .Nope.Foo}}', '0', None),
    ('{{or 1 (index nil 1)}}', '1', None),
    ('{{eq nil nil}}', 'true', None),
    ('{{eq .Name nil}}', 'false', None),
    ('{{nil | printf "%v"}}', None, 'template: :1:2: executing "" at <nil>: nil is not a command'),
    ('{{printf "%v" nil}}', '<nil>', None),
    ('{{"x" | len}}', '1', None),
    ('{{. | printf "%T"}}', '*formatter.clientContextContext', None),
    ('{{if}}x{{end}}', None, 'template: :1: missing value for if'),
    ('{{range}}{{end}}', None, 'template: :1: missing value for range'),
    ('{{with}}{{end}}', None, 'template: :1: missing value for with'),
    ('{{range .Name}}', None, 'template: :1: unexpected EOF'),
    ('{{if 1}}{{else}}', None, 'template: :1: unexpected EOF'),
    ('{{if 1}}{{else 1}}{{end}}', None, 'template: :1: unexpected "1" in else'),
    ('{{end 1}}', None, 'template: :1: unexpected "1" in end'),
    ('{{break 1}}', None, 'template: :1: unexpected "1" in {{break}}'),
    ('{{range 1}}{{break 1}}{{end}}', None, 'template: :1: unexpected "1" in {{break}}'),
    ('{{range 1}}{{continue}}{{end}}x', 'x', None),
    ('{{$x := 1 2}}', None, 'template: :1:8: executing "" at <1>: can\'t give argument to non-function 1'),
    ('{{$x := }}', None, 'template: :1: missing value for command'),
    ('{{$x = 1}}', None, 'template: :1:7: executing "" at <1>: undefined variable: $x'),
    ('{{$x 1}}', None, 'template: :1: undefined variable "$x"'),
    ('{{.Name|}}', 'default', None),
    ('{{|.Name}}', None, 'template: :1: unexpected "|" in command'),
    ('{{.Name||len}}', None, 'template: :1: unexpected "|" in command'),
    ('{{(}}', None, 'template: :1: unclosed left paren'),
    ('{{)}}', None, 'template: :1: unexpected right paren'),
    ('{{(.Name}}', None, 'template: :1: unclosed left paren'),
    ('{{.Name))}}', None, 'template: :1: unexpected right paren'),
    ('{{"a" "b"}}', None, 'template: :1:2: executing "" at <"a">: can\'t give argument to non-function "a"'),
    ('{{printf "%s" (.Name)}}', 'default', None),
    ("{{'ab'}}", None, "template: :1: malformed character constant: 'ab'"),
    ("{{''}}", None, 'template: :1: invalid syntax'),
    ('{{"\\400"}}', None, 'template: :1: invalid syntax'),
    ('{{"\\u12"}}', None, 'template: :1: invalid syntax'),
    ('{{0x}}', None, 'template: :1: illegal number syntax: "0x"'),
    ('{{1.2.3}}', None, 'template: :1: unexpected ".3" in operand'),
    ('{{1e}}', None, 'template: :1: illegal number syntax: "1e"'),
    ('{{--1}}', None, 'template: :1: bad number syntax: "--1"'),
    ('{{.Foo.Bar.Baz.Quux.Something.Long}}', None, 'template: :1:6: executing "" at <.Foo.Bar.Baz.Quux.Something.Long>: can\'t evaluate field Foo in type *formatter.clientContextContext'),
    ('{{template "x" .}}', None, 'template: :1:11: executing "" at <{{template "x" .}}>: template "x" not defined'),
    ('{{template x}}', None, 'template: :1: unexpected "x" in template clause'),
    ('{{define "x"}}{{end}}', '', None),
    ('{{block "x" .}}{{end}}', '', None),
    ('{{.Name.Foo.Bar}}', None, 'template: :1:7: executing "" at <.Name.Foo.Bar>: can\'t evaluate field Foo in type string'),
    ('{{$x := split "a,b" ","}}{{$x.Foo}}', None, 'template: :1:29: executing "" at <$x.Foo>: can\'t evaluate field Foo in type []string'),
    ('{{index .Name "x"}}', None, 'template: :1:2: executing "" at <index .Name "x">: error calling index: cannot index slice/array with type string'),
    ('{{printf "%d %s" (len "ab") (upper "x")}}', '2 X', None),
    ('{{- "a" -}} {{- "b" -}}', 'ab', None),
    ('{{\t.Name\t}}', 'default', None),
    ('{{', None, 'template: :1: unclosed action'),
    ('.Name', '.Name', None),
    ('}}', '}}', None),
    ('{{.Name', None, 'template: :1: unclosed action'),
    ('}}', '}}', None),
    ('{{range $i := split "a" ","}}{{$i}}{{end}}', 'a', None),
    ('{{ .Name | printf "%-12s|" }}', 'default     |', None),
    ('{{printf "%5s|%-5s|%05s" "ab" "ab" "ab"}}', '   ab|ab   |000ab', None),
    ('{{printf "%3d|%-3d|%03d|%+03d|%x|%X|%#X|%08b" 7 7 7 7 -1 3054 3054 5}}', '  7|7  |007|+07|-1|BEE|0XBEE|00000101', None),
    ('{{printf "%e %E %.2e %10.3e %-12e|" 123456.789 0.000123 1.0 -5.5 2.0}}', '1.234568e+05 1.230000E-04 1.00e+00 -5.500e+00 2.000000e+00|', None),
    ('{{printf "%c%c%c" 72 105 128512}}', 'Hi😀', None),
    ('{{printf "%U %#U" 128512 0x41}}', "U+1F600 U+0041 'A'", None),
    ('{{printf "%q" 128512}}', "'😀'", None),
    ('{{printf "%v %d" (split "a" ",") (split "a" ",")}}', '[a] [%!d(string=a)]', None),
    ('{{printf "%s" true}}', '%!s(bool=true)', None),
    ('{{printf "%d" true}}', '%!d(bool=true)', None),
    ('{{printf "%t" 1}}', '%!t(int=1)', None),
    ('{{printf "%z" 1}}', '%!z(int=1)', None),
    ('{{printf "%-8v|%8v|" "ab" 1.5}}', 'ab      |     1.5|', None),
    ('{{printf "%.3v" "abcdef"}}', 'abc', None),
    ('{{printf "%v" 1e20}} {{printf "%v" 1e21}} {{1e20}} {{100000.5}} {{123456789.0}} {{0.000012345}}', '1e+20 1e+21 1e+20 100000.5 1.23456789e+08 1.2345e-05', None),
    ('{{print "a" 1 2 "b" "c" 3.5 true false}}', 'a1 2bc3.5 true false', None),
    ('{{println "a" 1}}{{println}}', 'a 1\n\n', None),
    ('{{printf "%s"}}{{printf ""}}{{printf "plain"}}', '%!s(MISSING)plain', None),
    ('{{printf "%%d %5%|"}}', '%d %|', None),
    ('{{printf "%.*f|%*.*f|" 2 3.14159 8 3 3.14159}}', '3.14|   3.142|', None),
    ('{{printf "%*d" "x" 1}}', '%!(BADWIDTH)1', None),
    ('{{printf "%.*d" -1 1}}', '%!(BADPREC)1', None),
    ('{{printf "%[3]d" 1 2}}', '%!d(BADINDEX)', None),
    ('{{printf "%[1]d %[1]q %d" 65 66}}', "65 'A' 66", None),
    ('{{printf "%[0]d" 1}}', '%!d(BADINDEX)', None),
    ('{{printf "%[x]d" 1}}', '%!d(BADINDEX)', None),
    ('{{urlquery "a" "b c"}} {{html 1 "<"}} {{js 1}}', 'ab+c 1&lt; 1', None),
    ('{{index "héllo" 1}}', '195', None),
    ('{{len "日本"}}', '6', None),
    ('{{title "ÉCOLE élan_x 3d"}}', 'ÉCOLE Élan_x 3d', None),
    ('{{lower "ÉÇ"}}', 'éç', None),
    ('{{split "a,,b" ","}} {{split "" ","}} {{split "abc" ""}}', '[a  b] [] [a b c]', None),
    ('{{json (split "" ",")}}', '[""]', None),
    ('{{json 0.1}} {{json 12345678.9}} {{json -0.000001}} {{json 0.0000001}} {{json 1e20}} {{json 123.0}}', '0.1 12345678.9 -0.000001 1e-7 100000000000000000000 123', None),
    ('{{define "T"}}[{{.}}|{{$}}]{{end}}{{template "T" "x"}}{{template "T"}}{{block "B" 1}}b{{.}}{{end}}', '[x|x][<no value>|<no value>]b1', None),
    ('{{define "T"}}{{.Foo}}{{end}}{{template "T" .}}', None, 'template: :1:16: executing "T" at <.Foo>: can\'t evaluate field Foo in type *formatter.clientContextContext'),
    ('{{define "T"}}{{$x}}{{end}}', None, 'template: :1: undefined variable "$x"'),
    ('{{define "T"}}', None, 'template: :1: unexpected EOF'),
    ('{{define T}}{{end}}', None, 'template: :1: unexpected "T" in define clause'),
    ('{{define "T" 1}}{{end}}', None, 'template: :1: unexpected "1" in define clause'),
    ('{{define "T"}}{{else}}{{end}}', None, 'template: :1: unexpected {{else}} in define clause'),
    ('{{template "T"}}', None, 'template: :1:11: executing "" at <{{template "T"}}>: template "T" not defined'),
    ('{{template "T" .Name}}{{define "T"}}<{{.}}>{{end}}', '<default>', None),
    ('{{if 1}}{{define "T"}}{{end}}{{end}}', None, 'template: :1: unexpected <define> in command'),
    ('{{index "héllo" 2}}', '169', None),
    ("{{''}}", None, 'template: :1: invalid syntax'),
    ('{{--1}}', None, 'template: :1: bad number syntax: "--1"'),
    ('{{1-}}', None, 'template: :1: bad number syntax: "1-"'),
]


def run(text: str, data: object = None, **kw: object) -> str:
    return Template.parse(text).execute(data, **kw)  # type: ignore[arg-type]


def error_of(text: str, data: object = None) -> str:
    with pytest.raises(TemplateError) as info:
        run(text, data)
    return str(info.value)


@pytest.mark.parametrize("text,expected,error", DOCKER_VECTORS)
def test_docker_vectors(text: str, expected: str | None, error: str | None) -> None:
    if error is None:
        assert run(text, CONTEXT) == expected
    else:
        assert error_of(text, CONTEXT) == error


# What `docker container inspect` hands its template, as the Engine API's JSON decodes.
INSPECT = {
    "Id": "4fa6e0f0c6786287e131c3852c58a2e01cc697a68231826813597e4994f1d6e2",
    "Name": "/web",
    "Args": ["-g", "daemon off;"],
    "State": {"Status": "running", "Running": True, "Pid": 1234, "ExitCode": 0,
              "Health": None},
    "Config": {"Env": ["PATH=/usr/bin", "A=<b>&c"], "Labels": {"com.example": "x", "a.b": "1"},
               "Cmd": ["nginx"], "Image": "nginx:latest"},
    "Mounts": [{"Source": "/srv", "Destination": "/data"}, {"Source": "/v", "Destination": "/w"}],
    "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2", "Gateway": "172.17.0.1"}},
                        "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}},
    "HostConfig": {"Memory": 0, "NanoCpus": 1500000000},
}

INSPECT_VECTORS = [
    ("{{.Id}}", INSPECT["Id"]),
    ("{{.Name}}", "/web"),
    ("{{.State.Status}}", "running"),
    ("{{.State.Running}} {{.State.Pid}} {{.State.ExitCode}}", "true 1234 0"),
    ("{{json .Config.Env}}", '["PATH=/usr/bin","A=<b>&c"]'),
    ("{{json .State}}", '{"Status":"running","Running":true,"Pid":1234,"ExitCode":0,"Health":null}'),
    ("{{range .Mounts}}{{.Source}}:{{.Destination}} {{end}}", "/srv:/data /v:/w "),
    ('{{index .Config.Labels "a.b"}}', "1"),
    ('{{index .Config.Labels "missing"}}', ""),
    ("{{.Config.Labels.missing}}", "<no value>"),
    ("{{.Config.Labels.missing.deeper}}", "<no value>"),
    ('{{join .Args ","}}', "-g,daemon off;"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}", "a.b=1;com.example=x;"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}{{break}}{{end}}", "a.b"),
    ('{{if eq .State.Status "running"}}up{{else}}down{{end}}', "up"),
    ('{{if eq .State.Status "exited" "dead"}}gone{{else if .State.Running}}up{{end}}', "up"),
    ('{{printf "%-10s|" .Name}}', "/web      |"),
    ("{{.NetworkSettings.Networks}}", "map[bridge:map[Gateway:172.17.0.1 IPAddress:172.17.0.2]]"),
    ("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "172.17.0.2"),
    ('{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}', "8080"),
    ('{{index .NetworkSettings.Ports "80/tcp" 0 "HostPort"}}', "8080"),
    ("{{range $p, $conf := .NetworkSettings.Ports}}{{$p}} -> {{(index $conf 0).HostPort}}{{end}}",
     "80/tcp -> 8080"),
    ("{{.Args}}", "[-g daemon off;]"),
    ("{{.State.Health}}", "<nil>"),
    ("{{with .State.Health}}{{.Status}}{{else}}no health{{end}}", "no health"),
    ("{{.HostConfig}}", "map[Memory:0 NanoCpus:1500000000]"),
    ("{{len .Mounts}} {{len .Config.Labels}} {{len .Name}}", "2 2 4"),
    ("{{range $i, $m := .Mounts}}{{if $i}},{{end}}{{$m.Destination}}{{end}}", "/data,/w"),
    ("{{$name := .Name}}{{range .Mounts}}{{$name}}{{.Source}} {{end}}", "/web/srv /web/v "),
    ("{{range .Mounts}}{{$.Name}}{{end}}", "/web/web"),
    ("{{with .Config}}{{.Image}}{{end}}", "nginx:latest"),
    ('{{split .Config.Image ":"}}', "[nginx latest]"),
    ('{{index (split .Config.Image ":") 1}}', "latest"),
    ("{{upper .Name}} {{lower \"ABC\"}} {{title \"hello world\"}}", "/WEB abc Hello World"),
    ("{{.Id | printf \"%.12s\"}}", "4fa6e0f0c678"),
    ("{{truncate .Id 12}}", "4fa6e0f0c678"),
    ("{{json .NetworkSettings.Networks.bridge.IPAddress}}", '"172.17.0.2"'),
    ("{{printf \"%d%%\" .HostConfig.Memory}}", "0%"),
    ("{{range .Config.Env}}{{println .}}{{end}}", "PATH=/usr/bin\nA=<b>&c\n"),
    ("{{- range .Config.Cmd }}\n  {{ . }}\n{{- end }}", "\n  nginx"),
]


@pytest.mark.parametrize("text,expected", INSPECT_VECTORS)
def test_inspect_vectors(text: str, expected: str) -> None:
    assert run(text, INSPECT) == expected


@pytest.mark.parametrize("text,error", [
    ("{{.State.Health.Status}}",
     'template: :1:8: executing "" at <.State.Health.Status>: nil pointer evaluating interface {}.Status'),
    ("{{.Name.First}}",
     'template: :1:7: executing "" at <.Name.First>: can\'t evaluate field First in type string'),
    ("{{range .Name}}{{end}}",
     'template: :1:8: executing "" at <.Name>: range can\'t iterate over /web'),
    ('{{index .Mounts 5}}',
     'template: :1:2: executing "" at <index .Mounts 5>: error calling index: index out of range: 5'),
    ('{{join .Mounts ","}}',
     'template: :1:7: executing "" at <.Mounts>: wrong type for value; expected []string; '
     'got []interface {}'),
    ("{{.Config.Labels 1}}",
     'template: :1:9: executing "" at <.Config.Labels>: Labels is not a method but has arguments'),
    ("{{eq .State.Pid \"1234\"}}",
     'template: :1:2: executing "" at <eq .State.Pid "1234">: error calling eq: '
     'incompatible types for comparison'),
])
def test_inspect_errors(text: str, error: str) -> None:
    assert error_of(text, INSPECT) == error


def test_error_position_on_later_lines() -> None:
    assert error_of("line one\n  {{.A.B}}", {"A": 1}) == (
        'template: :2:6: executing "" at <.A.B>: can\'t evaluate field B in type int')
    assert error_of("a\n\n{{if}}") == "template: :3: missing value for if"
    assert error_of("{{if 1}}\n\nx") == "template: :3: unexpected EOF"


def test_long_error_context_is_the_node() -> None:
    assert error_of('{{printf "%s" "a very long string that goes on" | len | .X}}', {}) == (
        'template: :1:56: executing "" at <.X>: X is not a method but has arguments')


@dataclasses.dataclass
class Port:
    private: int
    public: int


class Container:
    """A struct-like object: attributes are fields, methods are called."""

    go_type = "*formatter.ContainerContext"

    def __init__(self) -> None:
        self.ID = "abc"
        self.labels = {"a": "1"}
        self._secret = "x"

    def Names(self) -> str:
        return "web"

    def Label(self, name: str) -> str:
        return self.labels.get(name, "")

    def Fail(self) -> str:
        raise ValueError("no such thing")


def test_objects_are_structs() -> None:
    c = Container()
    assert run("{{.ID}} {{.Names}} {{.Label \"a\"}}|{{.Label \"b\"}}|", c) == "abc web 1||"
    assert run('{{"a" | .Label}}', c) == "1"
    assert error_of("{{.Nope}}", c) == (
        'template: :1:2: executing "" at <.Nope>: can\'t evaluate field Nope in type '
        '*formatter.ContainerContext')
    assert error_of("{{._secret}}", c).endswith("can't evaluate field _secret in type "
                                               "*formatter.ContainerContext")
    assert error_of("{{.Label}}", c) == (
        'template: :1:2: executing "" at <.Label>: wrong number of args for Label: want 1 got 0')
    assert error_of("{{.Fail}}", c) == (
        'template: :1:2: executing "" at <.Fail>: error calling Fail: no such thing')
    assert error_of("{{.ID 1}}", c) == (
        'template: :1:2: executing "" at <.ID>: ID has arguments but cannot be invoked as function')


def test_dataclass_prints_as_go_struct() -> None:
    assert run("{{.}} {{.public}} {{printf \"%+v\" .}}", Port(80, 8080)) == (
        "{80 8080} 8080 {private:80 public:8080}")
    assert run("{{json .}}", Port(80, 8080)) == '{"private":80,"public":8080}'


def test_gostruct() -> None:
    s = GoStruct("T", {"A": 1, "Upper": lambda v: v.upper(), "Zero": lambda: "z"})
    assert run('{{.A}} {{.Upper "x"}} {{.Zero}} {{"y" | .Upper}}', s) == "1 X z Y"
    assert run("{{json .}}", s) == '{"A":1,"Zero":"z"}'
    assert error_of("{{.B}}", s).endswith("can't evaluate field B in type T")


def test_funcs_at_parse_and_execute() -> None:
    tmpl = Template.parse('{{greet "bob"}} {{upper "x"}}', funcs={"greet": lambda n: "hi " + n})
    assert tmpl.execute(None) == "hi bob X"
    # Execute-time functions replace same-named ones for that run only (table headers).
    assert tmpl.execute(None, funcs={"upper": lambda v: v}) == "hi bob x"
    assert tmpl.execute(None) == "hi bob X"
    with pytest.raises(TemplateError, match='wrong number of args for greet: want 1 got 2'):
        Template.parse('{{greet "a" "b"}}', funcs={"greet": lambda n: n}).execute(None)
    with pytest.raises(TemplateError, match='error calling boom: bad'):
        Template.parse("{{boom}}", funcs={"boom": _boom}).execute(None)


def _boom() -> str:
    raise RuntimeError("bad")


def test_template_is_reusable_and_keeps_no_state() -> None:
    tmpl = Template.parse("{{$x := .}}{{$x}}{{range .}}{{.}}{{end}}")
    assert tmpl.execute([1, 2]) == "[1 2]12"
    assert tmpl.execute([]) == "[]"
    assert tmpl.execute([3]) == "[3]3"


def test_value_printing() -> None:
    assert format_value(None) == "<nil>"
    assert format_value(NO_VALUE) == "<no value>"
    assert format_value([1, "a", None, True, 2.5]) == "[1 a <nil> true 2.5]"
    assert format_value({"b": [1], "a": {"x": None}}) == "map[a:map[x:<nil>] b:[1]]"
    assert format_value(1e21) == "1e+21"
    assert format_value(123456789.0) == "1.23456789e+08"
    assert format_value(0.1) == "0.1"
    assert format_value(float("inf")) == "+Inf"


def test_json_is_go_encoding() -> None:
    assert go_json({"a": "<&>", "b": [1, 2.0, None], "c": "\u2028é\x01"}) == (
        '{"a":"<&>","b":[1,2,null],"c":"\\u2028é\\u0001"}')
    assert go_json(1e-7) == "1e-7"
    assert go_json(1e21) == "1e+21"
    assert go_json(float("nan")) == ""


def test_json_of_a_struct_escapes_html_as_json_marshal() -> None:
    # docker's contexts marshal with json.Marshal (HTML escaped); the json function's own
    # encoder does not escape, so plain values keep <, > and &.
    row = GoStruct("*formatter.ImageContext", {"Digest": "<none>", "Labels": "a=b&c",
                                               "Label": lambda name: name})
    assert go_json(row) == '{"Digest":"\\u003cnone\\u003e","Labels":"a=b\\u0026c"}'
    assert run("{{json .}}", row) == go_json(row)
    assert run("{{json .Digest}} {{json .}}", {"Digest": "<none>"}) == (
        '"<none>" {"Digest":"<none>"}')
    assert go_json([row, "<"]) == '[{"Digest":"\\u003cnone\\u003e","Labels":"a=b\\u0026c"},"<"]'


def _strict(text: str) -> Template:
    return Template.parse(text).option("missingkey=error")


def test_missingkey_option() -> None:
    data = {"A": {"B": 1}, "L": TypedMap({"x": "1"})}
    with pytest.raises(TemplateError) as e:
        _strict("{{.Foo}}").execute(data)
    assert str(e.value) == 'template: :1:2: executing "" at <.Foo>: map has no entry for key "Foo"'
    with pytest.raises(TemplateError) as e:
        _strict("{{.A.C}}").execute(data)
    assert str(e.value).endswith('map has no entry for key "C"')
    assert _strict("{{.A.B}} {{.L.x}} {{.L.y}} {{index .A \"z\"}}").execute(data) == (
        "1 1 <no value> <nil>")
    assert Template.parse("{{.Foo}}").execute(data) == "<no value>"
    assert Template.parse("{{.Foo}}").option("missingkey=zero").execute(data) == "<no value>"
    assert Template.parse("[{{.y}}]").option("missingkey=zero").execute({"x": "1"}) == "[]"
    assert Template.parse("{{.Foo}}").option("missingkey=default").execute(data) == "<no value>"
    for bad in ("missingkey=bogus", "nokey=error", "missingkey"):
        with pytest.raises(ValueError, match="unrecognized option"):
            Template.parse("x").option(bad)


def test_missing_key_as_argument_is_nil() -> None:
    assert run("{{json .Nope}} {{printf \"%v\" .Nope}} {{if .Nope}}x{{else}}y{{end}}", {}) == (
        "null <nil> y")
    assert error_of("{{upper .Nope}}", {}) == (
        'template: :1:8: executing "" at <.Nope>: invalid value; expected string')


def test_speed_of_a_table_over_50_rows() -> None:
    rows = [{"ID": f"{i:012x}", "Names": f"name_{i}"} for i in range(50)]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        tmpl = Template.parse("{{.ID}}\t{{.Names}}")
        out = [tmpl.execute(row) for row in rows]
        best = min(best, time.perf_counter() - start)
    assert len(out) == 50
    assert best < 0.005, f"{best * 1000:.2f} ms"


def test_import_is_cheap(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[1] / "src"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    # Byte-code cached as an installed package has it, outside the checkout.
    env.update(PYTHONPATH=str(src), PYTHONPYCACHEPREFIX=str(tmp_path))
    cmd = [sys.executable, "-X", "importtime", "-c", "import dockyard.cli.formatter"]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    best: dict[str, int] = {}
    for _ in range(5):
        err = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stderr
        for line in err.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[2] in ("dockyard.cli.gotemplate", "dockyard.cli.formatter"):
                self_us = int(parts[0].rsplit(" ", 1)[-1])
                best[parts[2]] = min(best.get(parts[2], 10**9), self_us)
    assert set(best) == {"dockyard.cli.gotemplate", "dockyard.cli.formatter"}
    assert sum(best.values()) < 3000, best
    # Nothing heavy rides along: no typing, re, json or dataclasses at import.
    out = subprocess.run([sys.executable, "-c",
                          "import sys, dockyard.cli.formatter; "
                          "print(' '.join(m for m in ('typing', 're', 'json', 'dataclasses') "
                          "if m in sys.modules))"],
                         env=env, check=True, capture_output=True, text=True).stdout
    assert out.strip() == ""


@pytest.mark.skipif(not os.path.exists(DOCKER), reason="docker CLI not installed")
def test_against_docker_cli(tmp_path: Path) -> None:
    # The docker CLI lists contexts from its configuration directory without a daemon;
    # whatever its version, it must agree with us.
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    env["DOCKER_CONFIG"] = str(tmp_path)
    for text, _, _ in DOCKER_VECTORS[::7]:
        p = subprocess.run([DOCKER, "context", "ls", "--format", text], env=env,
                           capture_output=True, text=True, timeout=30)
        if p.returncode == 0:
            assert run(text, CONTEXT) + "\n" == p.stdout, text
        else:
            assert p.returncode == 1, text
            assert p.stderr.strip() == "template parsing error: " + error_of(text, CONTEXT)


class Broken:
    @property
    def X(self) -> str:
        raise KeyError("k")


def test_failing_property_and_runaway_recursion_are_template_errors() -> None:
    assert error_of("{{.X}}", Broken()) == (
        'template: :1:2: executing "" at <.X>: error calling X: \'k\'')
    assert error_of('{{define "T"}}{{template "T" .}}{{end}}{{template "T" .}}', 1) == (
        'template: :1:25: executing "T" at <{{template "T" .}}>: '
        "exceeded maximum template depth (100)")


def test_execute_partial_returns_output_up_to_the_error() -> None:
    tmpl = Template.parse("a{{.A}}b{{.A.B}}c")
    assert tmpl.execute_partial({"A": 1}) == "a1b"
    assert tmpl.execute_partial({"A": {"B": 2}}) == "amap[B:2]b2c"
