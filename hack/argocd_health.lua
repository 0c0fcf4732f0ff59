-- Runs config/argocd/health.lua the way Argo CD does (Lua 5.1, `obj` global) on the
-- SecretRotation in the JSON file given as argument; prints "<status>\t<message>".
local cjson = require("cjson")
local f = assert(io.open(arg[1], "r"))
obj = cjson.decode(f:read("*a"))
f:close()
local script = arg[2] or "config/argocd/health.lua"
local hs = dofile(script)
io.write(hs.status, "\t", hs.message or "", "\n")
