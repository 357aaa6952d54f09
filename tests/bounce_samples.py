"""Realistic bounce and complaint messages, written after RFC 3464 (DSN), RFC 5965 (ARF) and
the shapes Postfix, Exim, Gmail and Microsoft 365 / Outlook.com send. `to` is the VERP address
the campaign used as envelope sender; `rcpt` the reader's address."""

from __future__ import annotations


def _crlf(text: str) -> bytes:
    return text.lstrip("\n").replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def postfix_hard(to: str, rcpt: str, mid: str = "postfix-1") -> bytes:
    return _crlf(f"""
Return-Path: <>
Delivered-To: {to}
Received: by mail.example.org (Postfix) id 4Xk2s1;
\tMon, 23 Nov 2026 09:00:05 +0800 (CST)
Date: Mon, 23 Nov 2026 09:00:05 +0800 (CST)
From: MAILER-DAEMON@mail.example.org (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {to}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4Xk2s1.1700000005/mail.example.org"
Content-Transfer-Encoding: 8bit
Message-Id: <{mid}@mail.example.org>

This is a MIME-encapsulated message.

--4Xk2s1.1700000005/mail.example.org
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.example.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{rcpt}>: host mx.example.com[203.0.113.5] said: 550 5.1.1
    <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox
    table (in reply to RCPT TO command)

--4Xk2s1.1700000005/mail.example.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.org
X-Postfix-Queue-ID: 4Xk2s1
X-Postfix-Sender: rfc822; {to}
Arrival-Date: Mon, 23 Nov 2026 09:00:01 +0800 (CST)

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User
    unknown in virtual mailbox table

--4Xk2s1.1700000005/mail.example.org
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <{to}>
From: =?utf-8?b?5bWM5YWl5byPQUnnroDmiqU=?= <news@example.org>
To: {rcpt}
Subject: =?utf-8?b?5bWM5YWl5byPQUnnroDmiqU=?=
Message-ID: <2026-11-23.0123456789abcdef0123456789abcdef@example.org>

--4Xk2s1.1700000005/mail.example.org--
""")


def exim_classic_hard(to: str, rcpt: str, mid: str = "exim-1") -> bytes:
    """Exim's traditional bounce: text/plain with X-Failed-Recipients (no RFC 3464 part)."""
    return _crlf(f"""
Return-path: <>
Envelope-to: {to}
Received: from mail by mx.example.net with local (Exim 4.96)
\tid 1tAbCd-000123-Xy
\tfor {to}; Mon, 23 Nov 2026 01:00:07 +0000
X-Failed-Recipients: {rcpt}
Auto-Submitted: auto-replied
From: Mail Delivery System <Mailer-Daemon@mx.example.net>
To: {to}
Content-Type: text/plain; charset=us-ascii
Subject: Mail delivery failed: returning message to sender
Message-Id: <{mid}@mx.example.net>
Date: Mon, 23 Nov 2026 01:00:07 +0000

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {rcpt}
    host mx.example.com [203.0.113.5]
    SMTP error from remote mail server after RCPT TO:<{rcpt}>:
    550 5.1.1 No such user

------ This is a copy of the message's headers. ------

Return-path: <{to}>
To: {rcpt}
""")


def exim_dsn_soft(to: str, rcpt: str, mid: str = "exim-2") -> bytes:
    """Exim with RFC 3464 reports: a temporary failure given up after the retry time (4.x.x)."""
    return _crlf(f"""
Return-path: <>
Envelope-to: {to}
From: Mail Delivery System <Mailer-Daemon@mx.example.net>
To: {to}
Subject: Mail delivery failed: returning message to sender
Message-Id: <{mid}@mx.example.net>
Date: Mon, 23 Nov 2026 05:00:07 +0000
Auto-Submitted: auto-replied
X-Failed-Recipients: {rcpt}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary=1700000007-eximdsn-123

--1700000007-eximdsn-123
Content-type: text/plain; charset=us-ascii

This message was created automatically by mail delivery software.

A message that you sent has not yet been delivered and the retry time was exceeded:

  {rcpt}
    host mx.example.com [203.0.113.5]
    SMTP error from remote mail server after RCPT TO:<{rcpt}>:
    452 4.2.2 Mailbox full

--1700000007-eximdsn-123
Content-type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Action: failed
Final-Recipient: rfc822;{rcpt}
Status: 4.2.2
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full

--1700000007-eximdsn-123
Content-type: text/rfc822-headers

Return-path: <{to}>
To: {rcpt}

--1700000007-eximdsn-123--
""")


def gmail_hard(to: str, rcpt: str, mid: str = "gmail-1") -> bytes:
    return _crlf(f"""
Delivered-To: {to}
Return-Path: <>
Received: by 2002:a05:6000:1a8c:b0:38f with SMTP id l12csp123456;
        Sun, 22 Nov 2026 17:00:09 -0800 (PST)
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {to}
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
References: <2026-11-23.0123456789abcdef0123456789abcdef@example.org>
In-Reply-To: <2026-11-23.0123456789abcdef0123456789abcdef@example.org>
X-Failed-Recipients: {rcpt}
Message-ID: <{mid}@mx.google.com>
Date: Sun, 22 Nov 2026 17:00:09 -0800 (PST)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000abc123"; report-type=delivery-status

--000000000000abc123
Content-Type: multipart/related; boundary="000000000000abc124"

--000000000000abc124
Content-Type: multipart/alternative; boundary="000000000000abc125"

--000000000000abc125
Content-Type: text/plain; charset="UTF-8"

** Address not found **

Your message wasn't delivered to {rcpt} because the address couldn't be found, or is unable to receive mail.

The response from the remote server was:
550 5.1.1 The email account that you tried to reach does not exist.

--000000000000abc125
Content-Type: text/html; charset="UTF-8"

<html><body><h2>Address not found</h2><p>Your message wasn't delivered.</p></body></html>

--000000000000abc125--

--000000000000abc124--

--000000000000abc123
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; news.example.org
Arrival-Date: Sun, 22 Nov 2026 17:00:08 -0800 (PST)
X-Original-Message-ID: <2026-11-23.0123456789abcdef0123456789abcdef@example.org>

Final-Recipient: rfc822; {rcpt}
Action: failed
Status: 5.1.1
Remote-MTA: dns; gmail-smtp-in.l.google.com. (142.250.1.27, the server for the domain gmail.com.)
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist.
Last-Attempt-Date: Sun, 22 Nov 2026 17:00:09 -0800 (PST)

--000000000000abc123
Content-Type: message/rfc822

Return-Path: <{to}>
From: news@example.org
To: {rcpt}
Subject: =?utf-8?b?5bWM5YWl5byPQUnnroDmiqU=?=
Message-ID: <2026-11-23.0123456789abcdef0123456789abcdef@example.org>
Content-Type: text/plain; charset=utf-8

(the newsletter)

--000000000000abc123--
""")


def gmail_delay(to: str, rcpt: str, mid: str = "gmail-2") -> bytes:
    """A warning, not a failure (Action: delayed): ignored."""
    return gmail_hard(to, rcpt, mid).replace(b"Action: failed", b"Action: delayed").replace(
        b"Status: 5.1.1", b"Status: 4.4.1").replace(b"(Failure)", b"(Delay)")


def microsoft_hard(to: str, rcpt: str, mid: str = "ms-1") -> bytes:
    return _crlf(f"""
Received: from AM9PR01MB1234.eurprd01.prod.outlook.com ([::1]) by
 AM9PR01MB1234.eurprd01.prod.outlook.com with mapi id 15.20.8158.017; Mon, 23 Nov 2026 01:00:11 +0000
MIME-Version: 1.0
From: postmaster@outlook.com
To: {to}
Date: Mon, 23 Nov 2026 01:00:11 +0000
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="5e8f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
X-MS-Exchange-Message-Is-Ndr:
Content-Language: en-US
Message-ID: <{mid}@AM9PR01MB1234.eurprd01.prod.outlook.com>
In-Reply-To: <2026-11-23.0123456789abcdef0123456789abcdef@example.org>
Subject: Undeliverable: =?utf-8?b?5bWM5YWl5byPQUnnroDmiqU=?=
Auto-Submitted: auto-replied

--5e8f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b
Content-Type: multipart/alternative; differences=Content-Type;
\tboundary="0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"

--0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d
Content-Type: text/plain; charset="us-ascii"

Your message to {rcpt} couldn't be delivered.
{rcpt.split("@")[0]} wasn't found at {rcpt.split("@")[1]}.

--0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d
Content-Type: text/html; charset="us-ascii"

<html><body><b>Your message to {rcpt} couldn't be delivered.</b></body></html>

--0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d--

--5e8f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b
Content-Type: message/delivery-status

Reporting-MTA: dns;AM9PR01MB1234.eurprd01.prod.outlook.com
Received-From-MTA: dns;news.example.org
Arrival-Date: Mon, 23 Nov 2026 01:00:10 +0000

Original-Recipient: rfc822;{rcpt}
Final-Recipient: rfc822;{rcpt}
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup

--5e8f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b
Content-Type: message/rfc822

Return-Path: {to}
From: news@example.org
To: {rcpt}
Subject: newsletter

body

--5e8f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b--
""")


def arf_complaint(to: str, rcpt: str, unsubscribe_url: str, mid: str = "arf-1", *,
                  verp: bool = True) -> bytes:
    """An abuse report (RFC 5965) as Yahoo's CFL sends it; with verp=False the Original-Mail-From
    is not ours and only the original's List-Unsubscribe token names the reader (Microsoft JMRP
    reports are redacted this way)."""
    mail_from = to if verp else "bounces@other.example"
    return _crlf(f"""
From: Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>
To: {to}
Subject: FW: newsletter
Date: Mon, 23 Nov 2026 12:00:00 +0000
Message-ID: <{mid}@arf.mail.yahoo.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
\tboundary="----=_Part_ARF_1"

------=_Part_ARF_1
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP 198.51.100.7 on
Mon, 23 Nov 2026 09:00:05 +0800.

------=_Part_ARF_1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Yahoo!-Mail-Feedback/2.0
Version: 1
Original-Mail-From: <{mail_from}>
Original-Rcpt-To: <{rcpt if verp else 'redacted@yahoo.com'}>
Arrival-Date: Mon, 23 Nov 2026 09:00:05 +0800
Source-IP: 198.51.100.7
Reported-Domain: example.org
Authentication-Results: mta1000.mail.gq1.yahoo.com; dkim=pass header.d=example.org

------=_Part_ARF_1
Content-Type: message/rfc822
Content-Disposition: inline

Return-Path: <{mail_from}>
From: news@example.org
To: {rcpt if verp else 'redacted@yahoo.com'}
Subject: newsletter
List-Unsubscribe: <{unsubscribe_url}>, <mailto:unsubscribe@example.org>
Message-ID: <2026-11-23.0123456789abcdef0123456789abcdef@example.org>

body

------=_Part_ARF_1--
""")


def auto_reply(to: str, mid: str = "ooo-1") -> bytes:
    return _crlf(f"""
From: =?utf-8?b?6K+76ICF?= <reader@example.com>
To: {to}
Subject: =?utf-8?b?6Ieq5Yqo5Zue5aSNOiDmiJHlnKjkvJHlgYc=?=
Auto-Submitted: auto-replied
X-Autoreply: yes
Message-ID: <{mid}@example.com>
Content-Type: text/plain; charset=utf-8

我在休假，12月1日回来。
""")


def junk(to: str, mid: str = "junk-1") -> bytes:
    return _crlf(f"""
From: deals@spam.example
To: {to}
Subject: Cheap watches
Message-ID: <{mid}@spam.example>
Content-Type: text/html

<a href="http://spam.example">buy</a>
""")


def broken(to: str) -> bytes:
    """No Message-ID, a report type but garbage inside, invalid bytes."""
    return (f"To: {to}\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n"
            "--b\r\nContent-Type: message/delivery-status\r\n\r\n\xff\xfe garbage: \r\n\r\n--b").encode("latin-1")
