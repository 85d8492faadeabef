<?php
// Calls iworx.route through PHP's xmlrpc extension, as older PHP integrations of InterWorx do,
// and prints what PHP decoded as JSON, with PHP's type names.
// Usage: php xmlrpc_route.php URL CA_FILE < request.json   (request: auth, controller, action, input)
$request = json_decode(stream_get_contents(STDIN), true);
[$script, $url, $cafile] = $argv;
$arguments = [$request["auth"], $request["controller"], $request["action"]];
if (array_key_exists("input", $request)) {
    $arguments[] = $request["input"];
}
$body = xmlrpc_encode_request("iworx.route", $arguments, ["encoding" => "UTF-8", "escaping" => "markup"]);
$context = stream_context_create([
    "http" => ["method" => "POST", "header" => "Content-Type: text/xml", "content" => $body],
    "ssl" => ["cafile" => $cafile, "verify_peer" => true],
]);
$reply = xmlrpc_decode(file_get_contents($url, false, $context), "UTF-8");
$types = [];
if (is_array($reply)) {
    foreach ($reply as $key => $value) {
        $types[$key] = gettype($value);
    }
}
echo json_encode(["reply" => $reply, "types" => $types, "fault" => is_array($reply) && xmlrpc_is_fault($reply)]);
