#!/usr/bin/perl
# Sends one message with BDAT (RFC 3030 CHUNKING) through Perl's Net::SMTP
# (libnet), after STARTTLS with certificate verification. The wire trace goes
# to standard error (Debug), so the caller can see the BDAT commands.
#
#   bdat_send.pl PORT CAFILE FROM TO MESSAGE_FILE CHUNK_BYTES
use strict;
use warnings;
use Net::SMTP;
use IO::Socket::SSL;

my ($port, $cafile, $from, $to, $file, $chunk) = @ARGV;
my $smtp = Net::SMTP->new('127.0.0.1', Port => $port, Hello => 'perl.example', Timeout => 60, Debug => 1)
    or die "connect: $@\n";
$smtp->starttls(SSL_ca_file => $cafile, SSL_hostname => 'localhost', SSL_verifycn_name => 'localhost')
    or die "STARTTLS: " . $smtp->message . "\n";
$smtp->supports('CHUNKING') or die "the server does not offer CHUNKING\n";
$smtp->mail($from) or die "MAIL: " . $smtp->message . "\n";
# Net::SMTP switches to BDAT only together with BODY=BINARYMIME, which a
# gateway storing CRLF text for POP3 does not offer; CHUNKING alone allows
# BDAT for ordinary messages (RFC 3030 section 2), so turn its BDAT path on.
${*$smtp}{'net_smtp_chunking'} = 1;
$smtp->to($to) or die "RCPT: " . $smtp->message . "\n";
open(my $fh, '<:raw', $file) or die "$file: $!\n";
my $data = do { local $/; <$fh> };
my @chunks = unpack("(a$chunk)*", $data);
my $last = pop @chunks;
for my $piece (@chunks) {
    $smtp->bdat($piece) or die "BDAT: " . $smtp->message . "\n";
    $smtp->code == 250 or die "BDAT: " . $smtp->code . "\n";
}
$smtp->bdatlast($last) or die "BDAT LAST: " . $smtp->message . "\n";
$smtp->code == 250 or die "BDAT LAST: " . $smtp->code . " " . $smtp->message . "\n";
print "chunks: ", scalar(@chunks) + 1, "\n";
$smtp->quit;
