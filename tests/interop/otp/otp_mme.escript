#!/usr/bin/env escript
%% -*- erlang -*-
%%
%% An MME built on Erlang/OTP's diameter application, used by test_otp_diameter.py
%% as an independent Diameter implementation talking to s13eir.
%%
%%   escript otp_mme.escript Port DiaFile CasesFile WatchdogWaitSeconds [callback|default]
%%
%% DiaFile is the S13 dictionary (s13.dia), compiled here at run time with
%% diameter_make:codec/2 into forms (no include files needed). CasesFile holds
%% Erlang terms {Label, Imei, Imsi | none, DestinationHost | none}, one ECR each.
%%
%% Output, one fact per line, parsed by the Python test:
%%   CEA result_code=R errors=E             capabilities exchange done (peer up)
%%   ANSWER label=L cmd=C ebit=B rc=R exp=X status=S errors=E failed=F failed_imei=I
%%   CALL_FAILED label=L reason=...         diameter:call/4 returned an error
%%   WATCHDOG dwr_sent=N dwa_recv=N dwr_recv=N dwa_sent=N
%%   PEER_DOWN                               after remove_transport (OTP sent DPR)
%%   DECODED cmd=C request=B ebit=B errors=E  every message OTP decoded, CEA to DPA
%%   DONE
%% Lines starting with DETAIL are the decoded messages, for humans.
-mode(compile).

-export([peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).

-define(SVC, otp_mme).
-define(HOST, "mme.s13eir.test").
-define(REALM, "s13eir.test").
-define(S13, 16777252).

main([PortS, DiaFile, CasesFile, WaitS]) ->
    main([PortS, DiaFile, CasesFile, WaitS, "callback"]);
main([PortS, DiaFile, CasesFile, WaitS, Mode]) ->
    try run(list_to_integer(PortS), DiaFile, CasesFile, list_to_integer(WaitS), Mode) of
        ok -> io:format("DONE~n"), halt(0)
    catch
        Class:Reason:Stack ->
            io:format("CRASH ~p~n", [{Class, Reason, Stack}]),
            halt(3)
    end;
main(_) ->
    io:format("usage: otp_mme.escript Port DiaFile CasesFile WatchdogWaitSeconds [callback|default]~n"),
    halt(64).

%% Mode "callback": answers with decode errors still reach handle_answer/4, so the
%% errors can be reported. Mode "default": OTP's default answer_errors (discard), as
%% an MME built on OTP would run: such an answer is dropped and the call fails.
run(Port, DiaFile, CasesFile, WaitS, Mode) ->
    AnswerErrors = case Mode of
                       "callback" -> [{answer_errors, callback}];
                       "default" -> []
                   end,
    {ok, [Forms]} = diameter_make:codec(DiaFile, [forms, return]),
    {ok, Dict, Bin, _Warnings} = compile:forms(Forms, [return, binary]),
    {module, Dict} = code:load_binary(Dict, atom_to_list(Dict) ++ ".erl", Bin),
    {ok, Cases} = file:consult(CasesFile),
    ok = application:ensure_started(diameter),
    ok = diameter:start_service(?SVC, [
        {'Origin-Host', ?HOST},
        {'Origin-Realm', ?REALM},
        {'Vendor-Id', 0},
        {'Product-Name', "otp-diameter-mme"},
        {'Supported-Vendor-Id', [10415]},
        {'Vendor-Specific-Application-Id', [[{'Vendor-Id', 10415}, {'Auth-Application-Id', [?S13]}]]},
        {decode_format, map},
        {application, [{alias, s13}, {dictionary, Dict}, {module, ?MODULE} | AnswerErrors]}]),
    true = diameter:subscribe(?SVC),
    Tracer = start_tracer(),
    {ok, Ref} = diameter:add_transport(?SVC, {connect, [
        {transport_module, diameter_tcp},
        {transport_config, [{raddr, {127, 0, 0, 1}}, {rport, Port}, {ip, {127, 0, 0, 1}}, {port, 0}]},
        %% RFC 3539 Tw, in ms: 6000 is the smallest value the RFC allows (OTP adds +-2 s jitter).
        {watchdog_timer, 6000},
        {connect_timer, 30000},
        {dpa_timeout, 3000}]}),
    wait_up(),
    lists:foreach(fun check/1, Cases),
    WaitS > 0 andalso wait_watchdog(erlang:monotonic_time(millisecond) + WaitS * 1000),
    %% remove_transport/2 makes OTP send DPR (Disconnect-Cause REBOOTING) and wait for the DPA.
    ok = diameter:remove_transport(?SVC, Ref),
    wait_down(),
    ok = diameter:stop_service(?SVC),
    report_decoded(Tracer),
    ok.

wait_up() ->
    receive
        {diameter_event, ?SVC, {up, _Ref, _Peer, _Config, Cea}} ->
            ['CEA' | Map] = element(4, Cea),
            io:format("CEA result_code=~w errors=~w~n", [maps:get('Result-Code', Map), element(6, Cea)]),
            io:format("DETAIL CEA ~p~n", [Map]);
        {diameter_event, ?SVC, {closed, _Ref, Reason, _Config}} ->
            io:format("CER_FAILED ~p~n", [Reason]),
            halt(2);
        {diameter_event, ?SVC, _Other} ->
            wait_up()
    after 10000 ->
        io:format("PEER_TIMEOUT~n"),
        halt(2)
    end.

%% Every message OTP decodes goes through diameter_codec:decode/2,3,4: a call trace
%% on it shows each decoded packet with its #diameter_packet.errors, including the
%% base messages (CEA, DWR/DWA, DPA) that never reach a callback.
start_tracer() ->
    Tracer = spawn(fun() -> tracer_loop([]) end),
    erlang:trace(all, true, [call, {tracer, Tracer}]),
    erlang:trace_pattern({diameter_codec, decode, '_'}, [{'_', [], [{return_trace}]}], [global]),
    Tracer.

tracer_loop(Acc) ->
    receive
        {trace, _Pid, return_from, {diameter_codec, decode, _}, Pkt}
          when is_tuple(Pkt), element(1, Pkt) =:= diameter_packet ->
            H = element(2, Pkt),
            %% {Hop-by-Hop, Command-Code, is_request}; nested decode calls return the same packet.
            Key = {element(6, H), element(4, H), element(8, H)},
            tracer_loop(lists:keystore(Key, 1, Acc, {Key, element(10, H), element(6, Pkt)}));
        {report, From} ->
            From ! {decoded, Acc},
            tracer_loop(Acc);
        _ ->
            tracer_loop(Acc)
    end.

report_decoded(Tracer) ->
    Ref = erlang:trace_delivered(all),
    receive {trace_delivered, all, Ref} -> ok after 5000 -> ok end,
    Tracer ! {report, self()},
    receive
        {decoded, List} ->
            [io:format("DECODED cmd=~w request=~w ebit=~w errors=~w~n", [Cmd, IsReq, EBit, Errors])
             || {{_Hbh, Cmd, IsReq}, EBit, Errors} <- List]
    after 5000 ->
        io:format("DECODED_TIMEOUT~n")
    end.

%% After remove_transport: OTP has sent DPR; wait for the peer to go down.
wait_down() ->
    receive
        {diameter_event, ?SVC, {down, _, _, _}} -> io:format("PEER_DOWN~n");
        {diameter_event, ?SVC, _Other} -> wait_down()
    after 10000 ->
        io:format("PEER_DOWN_TIMEOUT~n")
    end.

check({Label, Imei, Imsi, DestHost}) ->
    Opt = fun(_, none) -> []; (Name, V) -> [{Name, [V]}] end,
    Req = ['ME-Identity-Check-Request',
           {'Session-Id', diameter:session_id(?HOST)},
           {'Auth-Session-State', 1},
           {'Origin-Host', ?HOST},
           {'Origin-Realm', ?REALM},
           {'Destination-Realm', ?REALM},
           {'Terminal-Information', [{'IMEI', [Imei]}, {'Software-Version', ["01"]}]}]
          ++ Opt('User-Name', Imsi) ++ Opt('Destination-Host', DestHost),
    case diameter:call(?SVC, s13, Req, [{timeout, 5000}]) of
        {answer, Header, [Name | Map], Errors} ->
            io:format("ANSWER label=~s cmd=~w ebit=~w rc=~w exp=~w status=~w errors=~w failed=~w failed_imei=~p~n",
                      [Label, element(4, Header), element(10, Header), one(Map, 'Result-Code'),
                       exp_code(Map), one(Map, 'Equipment-Status'), Errors, failed(Map), failed_imei(Map)]),
            io:format("DETAIL ~s ~p ~p~n", [Label, Name, Map]);
        Other ->
            io:format("CALL_FAILED label=~s reason=~w~n", [Label, Other])
    end.

%% Map decode format: an optional AVP is a list of 0 or 1 values, a required one the value.
one(Map, Key) ->
    case maps:get(Key, Map, none) of
        [V] -> V;
        [] -> none;
        V -> V
    end.

exp_code(Map) ->
    case one(Map, 'Experimental-Result') of
        none -> none;
        Er -> {maps:get('Vendor-Id', Er), maps:get('Experimental-Result-Code', Er)}
    end.

%% Failed-AVP: the AVPs it carries, as [{Code, Vendor}] (#diameter_avp{code = 2, vendor_id = 3}).
failed(Map) ->
    [{element(2, A), element(3, A)} || A <- failed_avps(Map)].

%% The IMEI inside a Terminal-Information carried in Failed-AVP (#diameter_avp.value = 8).
failed_imei(Map) ->
    case [V || A <- failed_avps(Map), element(2, A) =:= 1401, is_map(V = element(8, A))] of
        [#{'IMEI' := [Imei]} | _] -> Imei;
        _ -> none
    end.

failed_avps(Map) ->
    case one(Map, 'Failed-AVP') of
        none -> [];
        F -> maps:get('AVP', F, [])
    end.

wait_watchdog(Deadline) ->
    Stats = stats(),
    W = [count(Stats, {{0, 280, 1}, send}), count(Stats, {{0, 280, 0}, recv}),
         count(Stats, {{0, 280, 1}, recv}), count(Stats, {{0, 280, 0}, send})],
    Done = case W of
               [S, R, _, _] when S > 0, R > 0 -> true;
               [_, _, R, S] when R > 0, S > 0 -> true;
               _ -> false
           end,
    case Done orelse erlang:monotonic_time(millisecond) > Deadline of
        true -> io:format("WATCHDOG dwr_sent=~w dwa_recv=~w dwr_recv=~w dwa_sent=~w~n", W);
        false -> timer:sleep(250), wait_watchdog(Deadline)
    end.

%% The peer counters: [{PeerPid, [{{{App, Cmd, IsReq}, send | recv}, N} | ...]}].
stats() ->
    case diameter:service_info(?SVC, statistics) of
        L when is_list(L) -> lists:append([Cs || {_, Cs} <- L, is_list(Cs)]);
        _ -> []
    end.

count(Stats, Key) -> lists:sum([N || {K, N} <- Stats, K =:= Key]).

%% diameter callbacks

peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) -> State.
pick_peer([Peer | _], _Remote, _Svc, _State) -> {ok, Peer};
pick_peer([], _Remote, _Svc, _State) -> false.
prepare_request(Pkt, _Svc, _Peer) -> {send, Pkt}.
prepare_retransmit(Pkt, _Svc, _Peer) -> {send, Pkt}.
%% #diameter_packet{header = 2, msg = 4, errors = 6}: the errors are the decode errors.
handle_answer(Pkt, _Req, _Svc, _Peer) -> {answer, element(2, Pkt), element(4, Pkt), element(6, Pkt)}.
handle_error(Reason, _Req, _Svc, _Peer) -> {error, Reason}.
handle_request(_Pkt, _Svc, _Peer) -> discard.
