<?php
// Calls route() through PHP's SoapClient, as PHP integrations of InterWorx do, and prints what
// PHP got back as JSON (with PHP's own type names), so the Python tests can check it.
// Usage: php route.php WSDL_URL SOAP_VERSION(1.1|1.2) CA_FILE < request.json
//   request.json: {"auth": ..., "controller": "...", "action": "...", "input": ... }
$request = json_decode(stream_get_contents(STDIN), true);
[$script, $wsdl, $version, $cafile] = $argv;
$context = stream_context_create(["ssl" => ["cafile" => $cafile, "verify_peer" => true]]);
$client = new SoapClient($wsdl, [
    "soap_version" => $version === "1.2" ? SOAP_1_2 : SOAP_1_1,
    "stream_context" => $context,
    "cache_wsdl" => WSDL_CACHE_NONE,
    "exceptions" => true,
    "trace" => true,
]);

function described($value) {
    if (is_array($value)) {
        $items = [];
        foreach ($value as $key => $item) {
            $items[] = ["key" => $key, "value" => described($item)];
        }
        return ["type" => array_is_list($value) ? "list" : "array", "items" => $items];
    }
    return ["type" => gettype($value), "value" => $value];
}

try {
    $arguments = [$request["auth"], $request["controller"], $request["action"]];
    if (array_key_exists("input", $request)) {
        $arguments[] = $request["input"];
    }
    $result = $client->__soapCall("route", $arguments);
    echo json_encode(["result" => described($result), "raw" => $result]);
} catch (SoapFault $fault) {
    echo json_encode(["fault" => $fault->getMessage(), "response" => $client->__getLastResponse()]);
}
