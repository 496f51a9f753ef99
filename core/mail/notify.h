/*
 * Postfix's notify_classes: which problems the postmaster hears about, and
 * at which address (bounce_notice_recipient, 2bounce_notice_recipient,
 * delay_notice_recipient, error_notice_recipient). The queue manager sends
 * the bounce, 2bounce and delay notices, smtpd the session transcripts of
 * the policy, protocol, resource, software and data classes.
 */
#ifndef PETREL_MAIL_NOTIFY_H
#define PETREL_MAIL_NOTIFY_H

#define MAIL_NOTIFY_BOUNCE   0x01u   /* copies of bounces; implies 2bounce */
#define MAIL_NOTIFY_2BOUNCE  0x02u   /* bounces that cannot be returned */
#define MAIL_NOTIFY_DELAY    0x04u   /* copies of delay warnings */
#define MAIL_NOTIFY_POLICY   0x08u   /* session transcripts after a policy rejection */
#define MAIL_NOTIFY_PROTOCOL 0x10u   /* after a protocol error */
#define MAIL_NOTIFY_RESOURCE 0x20u   /* mail not accepted for lack of resources */
#define MAIL_NOTIFY_SOFTWARE 0x40u   /* mail not accepted because of a software problem */
#define MAIL_NOTIFY_DATA     0x80u   /* a critical data file was unavailable */

/* The classes of a notify_classes list; -1 with *bad set to the first word
 * that is not a class. */
int mail_notify_classes(const char *const *words, unsigned *mask, const char **bad);

#endif
